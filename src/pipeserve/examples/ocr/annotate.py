"""Draw what the OCR pipeline read onto the page: each box, and its text on a side panel.

    from pipeserve.examples.ocr.annotate import annotate
    picture = annotate(jpeg_bytes, pipe({"data": jpeg_bytes})["result"])   # an RGB array
    PIL.Image.fromarray(picture).save("annotated.png")

Each detected line's box is outlined (and lightly tinted) on the page in a colour of its own; the
panel to the right of the page lists the recognised texts, numbered, each at the height of its box
where there is room (pushed down where lines crowd), with a thin leader to its box and the
recogniser's score in grey. The page keeps its size and place: the picture is the page, the panel
beside it, and below both only when a long list needs more height than the page.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["annotate"]

_PALETTE = (
    (214, 39, 40),
    (31, 119, 180),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
)
_PANEL_INK = (25, 25, 25)
_SCORE_INK = (130, 130, 130)
_PANEL_PAPER = (252, 252, 250)


def annotate(image: bytes | np.ndarray | Image.Image, lines: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The page with ``lines`` drawn on it, as an RGB ``uint8`` array.

    Args:
        image: the page as encoded bytes (JPEG, PNG...), a PIL image, or an array in OpenCV's BGR
            order (or grey), as the pipeline takes it.
        lines: the pipeline's result: ``[{"box": [[x, y] x 4], "text": str, "score": float}]``, in
            the page's pixels.

    Returns:
        An array of ``(max(height, panel), width + panel width, 3)``: the page unchanged outside
        the boxes and the leaders, with the panel of texts on its right.
    """
    page = _as_rgb(image)
    width, height = page.size
    panel_width = max(360, int(width * 0.85))
    boxes = [np.asarray(line["box"], dtype=np.float64).reshape(4, 2) for line in lines]
    size, tops, needed = _layout(boxes, height)
    canvas = Image.new("RGB", (width + panel_width, max(height, needed)), _PANEL_PAPER)
    canvas.paste(page, (0, 0))

    tint = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    shade = ImageDraw.Draw(tint)
    for index, (box, top) in enumerate(zip(boxes, tops, strict=True)):
        colour = _PALETTE[index % len(_PALETTE)]
        shade.polygon([tuple(point) for point in box.tolist()], fill=(*colour, 40))
        leader = [(float(box[:, 0].max()) + 3, float(box[:, 1].mean())), (width + 8, top + size // 2 + 1)]
        shade.line(leader, fill=(*colour, 110), width=1)
    canvas = Image.alpha_composite(canvas.convert("RGBA"), tint).convert("RGB")

    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=size)
    small = ImageFont.load_default(size=max(9, size - 4))
    header = ImageFont.load_default(size=15)
    draw.line([(width, 0), (width, canvas.height)], fill=(180, 180, 180), width=1)
    draw.text((width + 12, 8), f"{len(lines)} lines read (number, text, score)", font=header, fill=_SCORE_INK)
    for index, (line, box, top) in enumerate(zip(lines, boxes, tops, strict=True)):
        colour = _PALETTE[index % len(_PALETTE)]
        draw.polygon([tuple(point) for point in box.tolist()], outline=colour, width=2)
        label = f"{index + 1:>3}"
        draw.text((width + 10, top), label, font=font, fill=colour)
        score = f"{float(line.get('score', 0.0)):.2f}"
        score_width = draw.textlength(score, font=small)
        room = panel_width - 10 - 10 - draw.textlength("000 ", font=font) - score_width - 12
        text = _fit(draw, str(line.get("text", "")), font, room)
        draw.text((width + 10 + draw.textlength("000 ", font=font), top), text, font=font, fill=_PANEL_INK)
        draw.text((width + panel_width - 10 - score_width, top + 3), score, font=small, fill=_SCORE_INK)
    return np.asarray(canvas, dtype=np.uint8)


def _as_rgb(image: bytes | np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(image))) as opened:
            return opened.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        return Image.fromarray(array.astype(np.uint8), "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array[:, :, 2::-1]).astype(np.uint8), "RGB")
    raise ValueError(f"expected image bytes, a PIL image or a BGR/grey array, not an array of shape {array.shape}")


def _layout(boxes: Sequence[np.ndarray], height: int) -> tuple[int, list[int], int]:
    """The panel's font size, each entry's top and the height the panel needs: each entry at its
    box's top, or just below the entry before it; the largest size from 18 down to 11 that fits
    the page's height (at 11, the panel grows below the page)."""
    tops: list[int] = []
    bottom = 0
    for size in range(18, 10, -1):
        step, tops, bottom = size + 6, [], 34
        for box in boxes:
            top = max(int(box[:, 1].min()), bottom)
            tops.append(top)
            bottom = top + step
        if bottom <= height:
            return size, tops, bottom
    return 11, tops, bottom + 8


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, room: float) -> str:
    """``text``, cut with an ellipsis where it is wider than ``room`` pixels."""
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "...", font=font) > room:
        text = text[:-1]
    return text + "..."
