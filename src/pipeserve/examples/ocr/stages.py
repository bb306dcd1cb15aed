"""The Python stages of the OCR pipeline, registered on import.

Each stage uses rapidocr-onnxruntime's own utilities where they are a plain library call (image
loading, detection pre-processing, DB post-processing, the classifier's and the recogniser's
decoders, box sorting) and does the rest itself, with RapidOCR's defaults, so that results match
the library line for line. Per-image state travels in ``item["_ocr"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from rapidocr_onnxruntime.ch_ppocr_cls.utils import ClsPostProcess
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr_onnxruntime.main import RapidOCR
from rapidocr_onnxruntime.utils import LoadImage, add_round_letterbox, increase_min_side, reduce_max_side
from rapidocr_onnxruntime.utils.load_image import LoadImageError
from rapidocr_onnxruntime.utils.process_img import ResizeImgError

import pipeserve as ps

Item = dict[str, Any]

# RapidOCR 1.4 defaults (its config.yaml).
MAX_SIDE, MIN_SIDE, MIN_HEIGHT, MAX_RATIO = 2000, 30, 30, 8
DET_LIMIT, DET_MEAN_STD = 736, [0.5, 0.5, 0.5]
CLS_SHAPE, CLS_THRESH, CLS_LABELS = (3, 48, 192), 0.9, ["0", "180"]
REC_SHAPE, REC_GROUP = (3, 48, 320), 6
TEXT_SCORE = 0.5


class _Stage(ps.Backend):
    def forward(self, items: list[Item]) -> None:
        for item in items:
            self.apply(item)

    def apply(self, item: Item) -> None:
        raise NotImplementedError


@ps.register_backend("OcrPrepare", replace=True)
class Prepare(_Stage):
    """Image bytes (or array) -> the detector's input; keeps what is needed to map boxes back."""

    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        self.load = LoadImage()
        self.det_pre = DetPreProcess(DET_LIMIT, "min", DET_MEAN_STD, DET_MEAN_STD)

    def apply(self, item: Item) -> None:
        try:
            image = self.load(item["data"])
        except (LoadImageError, OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise ps.InputError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
        raw_h, raw_w = image.shape[:2]
        ratio_h = ratio_w = 1.0
        try:
            if max(raw_h, raw_w) > MAX_SIDE:
                image, ratio_h, ratio_w = reduce_max_side(image, MAX_SIDE)
            if min(image.shape[:2]) < MIN_SIDE:
                image, ratio_h, ratio_w = increase_min_side(image, MIN_SIDE)
        except ResizeImgError as exc:
            raise ps.InputError(
                f"a {raw_w}x{raw_h} image cannot be scaled into detection's limits (longest side {MAX_SIDE}, "
                f"shortest {MIN_SIDE}): its aspect ratio is too extreme"
            ) from exc
        height, width = image.shape[:2]
        top = 0
        if height <= MIN_HEIGHT or width / height > MAX_RATIO:
            target = max(int(width / MAX_RATIO), MIN_HEIGHT) * 2
            top = int(abs(target - height) / 2)
            image = add_round_letterbox(image, (top, top, 0, 0))
        tensor = self.det_pre(image)
        item["_ocr"] = {"image": image, "raw": (raw_h, raw_w), "ratio": (ratio_h, ratio_w), "top": top}
        if tensor is None:  # too small to detect anything
            item["result"] = None
            return
        item["result"] = tensor


@ps.register_backend("OcrBoxes", replace=True)
class Boxes(_Stage):
    """Detector output -> sorted text boxes and one upright crop per box (in ``data``)."""

    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        self.post = DBPostProcess(
            thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6, use_dilation=True, score_mode="fast"
        )

    def apply(self, item: Item) -> None:
        state = item["_ocr"]
        image = state["image"]
        if item["data"] is None:
            state["boxes"] = []
            item["result"] = []
            return
        boxes, _ = self.post(item["data"], image.shape[:2])
        kept = [b for b in (_upright(box, image.shape[0], image.shape[1]) for box in boxes) if b is not None]
        ordered = RapidOCR.sorted_boxes(np.array(kept)) if kept else []
        state["boxes"] = ordered
        crops = [_crop(image, box) for box in ordered]
        widths = _rec_widths(crops)
        item["result"] = [{"crop": crop, "rec_width": width} for crop, width in zip(crops, widths, strict=True)]


def _rec_widths(crops: list[Any]) -> list[int]:
    """The width each line is padded to for recognition, as RapidOCR pads it: lines sorted by
    aspect ratio in groups of ``REC_GROUP``, each padded to its group's widest ratio. The
    recogniser's output (spaces above all) depends on that padding, so matching it keeps results
    equal to RapidOCR's; the ``rec`` node then batches only lines of equal width."""
    _, height, base_width = REC_SHAPE
    ratios = np.array([crop.shape[1] / crop.shape[0] for crop in crops])
    order = np.argsort(ratios)
    widths = [0] * len(crops)
    for start in range(0, len(crops), REC_GROUP):
        group = order[start : start + REC_GROUP]
        width = int(height * max(base_width / height, float(ratios[group].max())))
        for index in group:
            widths[index] = width
    return widths


def _upright(box: Any, height: int, width: int) -> Any:
    """Order the corners clockwise from top-left, clip them to the image, drop tiny boxes."""
    by_x = box[np.argsort(box[:, 0]), :]
    left, right = by_x[:2], by_x[2:]
    top_left, bottom_left = left[np.argsort(left[:, 1]), :]
    top_right, bottom_right = right[np.argsort(right[:, 1]), :]
    corners = np.array([top_left, top_right, bottom_right, bottom_left], dtype=np.float32)
    corners[:, 0] = [int(min(max(x, 0), width - 1)) for x in corners[:, 0]]
    corners[:, 1] = [int(min(max(y, 0), height - 1)) for y in corners[:, 1]]
    if int(np.linalg.norm(corners[0] - corners[1])) <= 3 or int(np.linalg.norm(corners[0] - corners[3])) <= 3:
        return None
    return corners


def _crop(image: Any, box: Any) -> Any:
    """Warp the box upright; turn tall crops (height >= 1.5 x width) a quarter."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return crop


def _normalise(image: Any, width: int, height: int, padded_width: int) -> Any:
    resized = cv2.resize(image, (width, height)).astype("float32").transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((resized.shape[0], height, padded_width), dtype=np.float32)
    out[:, :, :width] = resized
    return out


@ps.register_backend("OcrClsPre", replace=True)
class ClsPre(_Stage):
    """A line crop -> the direction classifier's input (3 x 48 x 192)."""

    def apply(self, item: Item) -> None:
        line = item["data"]
        crop = line["crop"]
        item["_rec_width"] = line["rec_width"]
        _, height, width = CLS_SHAPE
        resized = min(width, math.ceil(height * crop.shape[1] / crop.shape[0]))
        item["crop"] = crop
        item["result"] = _normalise(crop, resized, height, width)


@ps.register_backend("OcrRecPre", replace=True)
class RecPre(ps.Backend):
    """Classifier output and line crop -> the recogniser's input: the crop turned 180 degrees
    when the classifier is sure, padded to its ``_rec_width`` (see _rec_widths). The batch's
    directions are decoded in one call."""

    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        self.post = ClsPostProcess(CLS_LABELS)

    def forward(self, items: list[Item]) -> None:
        directions = self.post(np.stack([item["data"] for item in items]))
        height = REC_SHAPE[1]
        for item, (label, score) in zip(items, directions, strict=True):
            crop = item.pop("crop")
            if "180" in label and score > CLS_THRESH:
                crop = cv2.rotate(crop, 1)
            ratio = crop.shape[1] / crop.shape[0]
            padded = item["_rec_width"]
            resized = min(padded, math.ceil(height * ratio))
            item["result"] = _normalise(crop, resized, height, padded)
            item["_sort_score"] = ratio


@ps.register_backend("OcrRecPost", replace=True)
class RecPost(ps.Backend):
    """Recogniser output -> ``{"text", "score"}`` (CTC decoding with the model's alphabet), one
    decoding call for the lines of a batch that have the same length."""

    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        import onnxruntime as ort

        session = ort.InferenceSession(str(params["model"]), providers=["CPUExecutionProvider"])
        alphabet = session.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.decode = CTCLabelDecode(character=alphabet)

    def forward(self, items: list[Item]) -> None:
        by_shape: dict[tuple[int, ...], list[Item]] = {}
        for item in items:
            by_shape.setdefault(item["data"].shape, []).append(item)
        for same in by_shape.values():
            decoded = self.decode(np.stack([item["data"] for item in same]))
            for item, line in zip(same, decoded, strict=True):
                text, score = line[:2]
                item["result"] = {"text": text, "score": float(score)}


@ps.register_backend("OcrFinish", replace=True)
class Finish(_Stage):
    """Lines and boxes -> ``[{"box", "text", "score"}]`` in original pixels, low scores dropped."""

    def apply(self, item: Item) -> None:
        state = item.pop("_ocr")
        lines = item["data"] or []
        if not lines:
            item["result"] = []
            return
        boxes = np.array(state["boxes"], dtype=np.float32)
        boxes[:, :, 1] -= state["top"]
        ratio_h, ratio_w = state["ratio"]
        boxes[:, :, 0] *= ratio_w
        boxes[:, :, 1] *= ratio_h
        raw_h, raw_w = state["raw"]
        boxes = np.clip(boxes, 0, None)
        boxes[..., 0] = np.minimum(boxes[..., 0], raw_w)
        boxes[..., 1] = np.minimum(boxes[..., 1], raw_h)
        item["result"] = [
            {"box": box.tolist(), "text": line["text"], "score": line["score"]}
            for box, line in zip(boxes, lines, strict=True)
            if line["score"] >= TEXT_SCORE
        ]
