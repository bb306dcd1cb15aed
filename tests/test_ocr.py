"""The PP-OCR pipeline against RapidOCR itself, bad inputs, and concurrency."""

import threading
from typing import Any

import pytest

pytest.importorskip("rapidocr_onnxruntime")
np = pytest.importorskip("numpy")

import pipeserve as ps  # noqa: E402
from pipeserve.examples import ocr  # noqa: E402
from pipeserve.examples.ocr.samples import compare, edge_cases, encode, from_rapidocr, text_image  # noqa: E402


@pytest.fixture(scope="module")
def pipe() -> Any:
    with ocr.pipeline() as built:
        yield built


@pytest.fixture(scope="module")
def engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def test_matches_rapidocr_on_generated_pages(pipe: Any, engine: Any) -> None:
    totals = {"lines": 0, "same_text": 0, "same_box": 0}
    pages = [text_image(seed) for seed in (1, 2, 3)] + [text_image(4, 6, upside_down=True), text_image(5, 1)]
    for page in pages:
        data = encode(page)
        ours = pipe({"data": data})["result"]
        for key, value in compare(ours, from_rapidocr(engine(data))).items():
            totals[key] += value
    assert totals["lines"] >= 20
    assert totals["same_text"] >= 0.99 * totals["lines"]
    assert totals["same_box"] >= 0.99 * totals["lines"]


def test_result_shape(pipe: Any) -> None:
    result = pipe({"data": encode(text_image(9, 3))})["result"]
    assert len(result) == 3
    for line in result:
        assert set(line) == {"box", "text", "score"}
        assert len(line["box"]) == 4 and all(len(p) == 2 for p in line["box"])
        assert isinstance(line["text"], str) and 0.5 <= line["score"] <= 1.0


def test_edge_cases_give_clear_results(pipe: Any, engine: Any) -> None:
    cases = edge_cases()
    wide = cases.pop("20000x20")
    for name, image in cases.items():
        data = encode(image, ".png")
        ours = pipe({"data": data})["result"]
        theirs = from_rapidocr(engine(data))
        assert [line["text"] for line in ours] == [line["text"] for line in theirs], name
    assert pipe({"data": encode(cases["blank"])})["result"] == []
    # RapidOCR itself raises an empty ResizeImgError here; we say what is wrong.
    with pytest.raises(ps.BackendError, match="a 20000x20 image cannot be scaled") as info:
        pipe({"data": encode(wide, ".png")})
    assert isinstance(info.value.__cause__, ps.InputError)


def test_bad_input_fails_clearly_and_does_not_disturb_others(pipe: Any) -> None:
    good = encode(text_image(11, 4))
    truncated = good[: len(good) // 3]
    outcomes: dict[str, Any] = {}

    def run(name: str, data: Any) -> None:
        try:
            outcomes[name] = pipe({"data": data})["result"]
        except ps.PipeServeError as error:
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=(f"good{i}", good)) for i in range(4)]
    threads += [
        threading.Thread(target=run, args=("not an image", b"definitely not an image")),
        threading.Thread(target=run, args=("truncated", truncated)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    texts = [[line["text"] for line in outcomes[f"good{i}"]] for i in range(4)]
    assert len(texts[0]) == 4 and all(t == texts[0] for t in texts)
    assert isinstance(outcomes["not an image"], ps.BackendError)
    assert "node 'prepare'" in str(outcomes["not an image"]) and "not a readable image" in str(outcomes["not an image"])
    assert isinstance(outcomes["truncated"], (list, ps.BackendError))  # a partial decode or a clear error


def test_lines_of_different_requests_batch_together(pipe: Any) -> None:
    def counts() -> dict[str, tuple[int, int]]:
        stats = pipe.stats()
        return {node: (stats[node]["items"], stats[node]["batches"]) for node in ("cls", "rec")}

    before = counts()
    pages = [encode(text_image(20 + i, 8)) for i in range(6)]
    futures = [pipe.submit({"data": page}) for page in pages]
    for future in futures:
        assert len(future.result(timeout=120)["result"]) == 8
    after = counts()
    cls_items, cls_batches = (after["cls"][i] - before["cls"][i] for i in (0, 1))
    rec_items, rec_batches = (after["rec"][i] - before["rec"][i] for i in (0, 1))
    assert cls_items == rec_items == 48
    assert cls_batches <= 8  # 48 lines of 6 requests in a handful of batches
    assert rec_batches == 48  # the recogniser reads one line a call on CPU (ocr.toml says why)


def _square_page(seed: int, lines: int) -> Any:
    """A 740x740 page of ``lines`` printed lines (BGR): near detection's own size, so quick."""
    import cv2

    page = np.full((740, 740, 3), 236, dtype=np.uint8)
    words = ("invoice", "total", "2026", "delivery", "page", "order", "42.50", "north", "report")
    for index in range(lines):
        text = " ".join(words[(seed + index + k) % len(words)] for k in range(3))
        cv2.putText(page, text, (40, 90 + 70 * index), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (25, 25, 25), 2, cv2.LINE_AA)
    return page


def test_bundled_pages_read_as_documents(pipe: Any) -> None:
    from pipeserve.examples.ocr.demo import IMAGES

    receipt = (IMAGES / "page2.jpg").read_bytes()  # the receipt: items, quantities, prices, a total
    texts = [line["text"] for line in pipe({"data": receipt})["result"]]
    assert len(texts) >= 15
    assert any("TOTAL" in text for text in texts)
    assert sum(any(c.isdigit() for c in text) for text in texts) >= 10


def test_annotated_page_shows_the_boxes_beside_their_texts(pipe: Any) -> None:
    from PIL import Image

    from pipeserve.examples.ocr.annotate import annotate

    image = _square_page(31, 5)  # BGR, as OpenCV gives it
    data = encode(image, ".png")
    lines = pipe({"data": data})["result"]
    assert len(lines) == 5
    height, width = image.shape[:2]
    for source in (data, image):
        picture = annotate(source, lines)
        assert picture.dtype == np.uint8 and picture.shape[2] == 3
        assert picture.shape[0] >= height and picture.shape[1] > width  # the page, a panel beside it
        page = picture[:height, :width].astype(int)
        plain = image[:, :, ::-1].astype(int)  # RGB
        left = int(min(min(x for x, _ in line["box"]) for line in lines)) - 2
        assert np.array_equal(page[:, :left], plain[:, :left])  # untouched left of every box
        for line in lines:
            box = np.asarray(line["box"])
            x0, y0 = box.min(axis=0).astype(int)
            x1, y1 = box.max(axis=0).astype(int)
            assert np.abs(page[y0 : y1 + 1, x0 : x1 + 1] - plain[y0 : y1 + 1, x0 : x1 + 1]).max() > 40  # drawn on
        panel = picture[:, width + 1 :]
        assert (panel < 128).any()  # the texts are written on the panel
    assert Image.fromarray(annotate(data, [])).size[0] > width  # no lines: the page and an empty panel


def test_demo_prints_text_writes_the_annotated_page_and_measures_fixed_counts(
    pipe: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import io

    from PIL import Image

    from pipeserve.examples.ocr import demo

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(2):
        (folder / f"page{seed}.jpg").write_bytes(encode(_square_page(seed, 3)))
    monkeypatch.setattr(demo, "IMAGES", folder)
    monkeypatch.setattr(demo, "pipeline", lambda: contextlib.nullcontext(pipe))  # the module's pipe, not closed
    monkeypatch.setattr(demo, "requests_for", lambda clients: clients + 1)
    out = io.StringIO()
    target = tmp_path / "out" / "annotated.png"
    demo.main(clients=(1, 2), out=out, annotated=target)  # rows of 2 and 3 requests
    text = out.getvalue()
    assert "page0.jpg: 3 lines" in text and f"annotated page written to {target}" in text
    with Image.open(target) as picture:
        assert picture.size[0] > 400
    header = next(line for line in text.splitlines() if line.startswith("| clients"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[:4] == ["clients", "requests", "seconds", "images/s"]
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in ("1", "2")]
    assert [[cell.strip() for cell in row.strip("|").split("|")][1] for row in rows] == ["2", "3"]
