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
    assert rec_batches <= 16  # only lines padded to the same width share a batch
