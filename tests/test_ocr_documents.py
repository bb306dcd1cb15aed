"""The generated documents of the OCR example: deterministic, sized like scanned pages, readable."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("PIL")

from pipeserve.examples.ocr import documents  # noqa: E402


def test_each_kind_is_deterministic_and_between_half_and_two_megapixels() -> None:
    for kind in documents.KINDS:
        page = documents.document(kind, 7, fonts="embedded")  # Pillow's own font: no system fonts needed
        assert page.kind == kind and page.seed == 7
        if kind in ("receipt", "rotated"):
            again = documents.document(kind, 7, fonts="embedded")
            assert np.array_equal(page.array(), again.array()), kind
        width, height = page.image.size
        assert 500_000 <= width * height <= 2_000_000, (kind, width, height)
        pixels = page.array()
        assert pixels.mean() > 200  # light paper...
        assert (pixels < 90).mean() > 0.005  # ...with dark text on it
    assert not np.array_equal(documents.document("receipt", 1).array(), documents.document("receipt", 2).array())


def test_held_out_pages_use_other_seeds_than_the_bundled_ones() -> None:
    held_out = documents.benchmark_pages(3)  # the bundled pages are seeds 0 to 5
    assert [page.kind for page in held_out] == list(documents.KINDS[:3])
    assert [page.seed for page in held_out] == [documents.BENCHMARK_SEED + i for i in range(3)]
    assert documents.BENCHMARK_SEED >= len(documents.KINDS)
    data = held_out[2].jpeg()
    assert data[:2] == b"\xff\xd8" and len(data) < 600_000


def test_bundled_images_are_the_generated_pages() -> None:
    paths = sorted(documents.IMAGES.glob("*.jpg"))
    assert [path.name for path in paths] == [f"page{i}.jpg" for i in range(len(documents.KINDS))]
    assert sum(path.stat().st_size for path in paths) < 1_500_000
    from PIL import Image

    for path, page in zip(paths, documents.bundled_pages(fonts="embedded"), strict=True):
        with Image.open(path) as image:
            assert image.size == page.image.size  # the sizes do not depend on the fonts


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'poster'"):
        documents.document("poster", 1)
