"""Generated OCR test images, and the comparison of two OCR results.

Images are deterministic per seed: printed text lines in OpenCV's Hershey fonts at several sizes,
1 to 40 lines, on light backgrounds with noise; some upside down (to exercise the direction
classifier), and the edge cases: blank, tiny, very large, very wide.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

WORDS = (
    "pipeline batch serve model tensor queue node graph latency token image text line box score "
    "detect classify recognise merge split jump window bucket instance thread process memory "
    "engine request client server 2026 42 3.14 OCR ONNX GPU CPU alpha beta gamma delta"
).split()
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def text_image(seed: int, lines: int | None = None, *, upside_down: bool = False) -> Any:
    """A page of ``lines`` printed lines (1-40, chosen by the seed if None)."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 41)) if lines is None else lines
    font = FONTS[seed % len(FONTS)]
    scale = float(rng.choice([0.6, 0.8, 1.0, 1.3]))
    thickness = 1 if scale < 0.8 else 2
    line_height = int(40 * scale) + 8
    width = int(rng.integers(500, 1100))
    height = max(120, count * line_height + 40)
    page = np.full((height, width, 3), rng.integers(200, 256, 3), dtype=np.uint8)
    page = np.clip(page + rng.normal(0, 4, page.shape), 0, 255).astype(np.uint8)
    for index in range(count):
        words = rng.choice(WORDS, int(rng.integers(1, 6)))
        text = " ".join(words)
        x = int(rng.integers(10, 60))
        y = 30 + index * line_height + int(25 * scale)
        cv2.putText(page, text, (x, y), font, scale, (20, 20, 20), thickness, cv2.LINE_AA)
    return cv2.rotate(page, cv2.ROTATE_180) if upside_down else page


def edge_cases() -> dict[str, Any]:
    """Images that stress the pipeline's edges."""
    tiny = np.full((1, 1, 3), 255, dtype=np.uint8)
    blank = np.full((300, 400, 3), 240, dtype=np.uint8)
    wide = np.full((20, 20000, 3), 250, dtype=np.uint8)
    cv2.putText(wide, "a very wide strip", (10, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    large = cv2.resize(text_image(7, 12), (2400, 1800))
    return {"tiny 1x1": tiny, "blank": blank, "20000x20": wide, "large": large}


def encode(image: Any, ext: str = ".jpg") -> bytes:
    """Encode an image (JPEG by default) to bytes."""
    ok, data = cv2.imencode(ext, image)
    if not ok:
        raise ValueError("encoding failed")
    return bytes(data.tobytes())


def from_rapidocr(output: Any) -> list[dict[str, Any]]:
    """RapidOCR's ``(result, elapse)`` as pipeserve's ``[{"box", "text", "score"}]``."""
    result = output[0] if isinstance(output, tuple) else output
    return [
        {"box": [list(map(float, p)) for p in box], "text": text, "score": float(score)}
        for box, text, score in result or []
    ]


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tolerance: float = 2.0) -> dict[str, int]:
    """Line-by-line agreement: same text, and boxes within ``tolerance`` pixels."""
    counts = {"lines": max(len(ours), len(theirs)), "same_text": 0, "same_box": 0}
    for mine, other in zip(ours, theirs, strict=False):
        counts["same_text"] += mine["text"] == other["text"]
        gap = float(np.abs(np.asarray(mine["box"]) - np.asarray(other["box"])).max())
        counts["same_box"] += gap <= tolerance
    return counts
