"""Triton Python-backend model: the OCR service composed with BLS (business logic scripting).

Input ``IMAGE`` (BYTES, an encoded image per batch row); output ``RESULT`` (BYTES, per row the JSON
list of lines ``{"box": [[x, y] x 4], "text": str, "score": float}``, as ``pipeserve serve ocr``
returns them).

Per page, as RapidOCR reads it (its defaults come from the wheel's own config.yaml):
decode and scale into RapidOCR's limits, letterbox very flat pages, ``DetPreProcess`` -> model
``det`` -> ``DBPostProcess``, box clean-up and ``RapidOCR.sorted_boxes``, one perspective crop per
box -> model ``cls`` (every line of the page in one request) -> ``ClsPostProcess``, turn lines the
classifier reads upside down -> model ``rec`` (one request per group of ``rec_batch_num`` lines in
aspect-ratio order, padded to the group's widest, as RapidOCR pads them) -> ``CTCLabelDecode`` ->
boxes back to original pixels, lines scoring under ``text_score`` dropped.

The networks run in the det, cls and rec models; this model only calls them, with
``pb_utils.InferenceRequest(...).async_exec()``. All pages of one execute() (a dynamic batch) run
concurrently, so their lines reach cls and rec together and batch there with other instances'.
"""

import asyncio
import json
import math
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import rapidocr_onnxruntime
import triton_python_backend_utils as pb_utils
from rapidocr_onnxruntime import RapidOCR
from rapidocr_onnxruntime.ch_ppocr_cls.utils import ClsPostProcess
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr_onnxruntime.utils import LoadImage, add_round_letterbox, increase_min_side, read_yaml, reduce_max_side

PACKAGE = Path(rapidocr_onnxruntime.__file__).parent
CLS_CHUNK = 32  # cls's max_batch_size: a page with more lines sends several requests


def _normalise(image, width, height, padded_width):
    """Resize to ``width`` x ``height``, scale to [-1, 1], CHW, zero-padded on the right."""
    resized = cv2.resize(image, (width, height)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padded = np.zeros((3, height, padded_width), dtype=np.float32)
    padded[:, :, :width] = resized
    return padded


def _fitted_width(ratio, height, limit):
    """RapidOCR's resized width of a line of aspect ratio ``ratio``: ``ceil(height * ratio)``,
    at most ``limit``."""
    width = math.ceil(height * ratio)
    return limit if width > limit else int(width)


def _clean_boxes(boxes, height, width):
    """Corners clockwise from the top-left, clipped to the image; boxes 3 pixels or thinner dropped."""
    kept = []
    for box in boxes:
        by_x = box[np.argsort(box[:, 0])]
        left = by_x[:2][np.argsort(by_x[:2, 1])]
        right = by_x[2:][np.argsort(by_x[2:, 1])]
        corners = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
        corners[:, 0] = [int(min(max(x, 0), width - 1)) for x in corners[:, 0]]
        corners[:, 1] = [int(min(max(y, 0), height - 1)) for y in corners[:, 1]]
        if int(np.linalg.norm(corners[0] - corners[1])) > 3 and int(np.linalg.norm(corners[0] - corners[3])) > 3:
            kept.append(corners)
    return kept


def _crop(image, box):
    """The box warped upright; a crop at least 1.5 times taller than wide is turned a quarter."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box, target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return crop


async def _infer(model, array, output):
    tensor = pb_utils.Tensor("x", np.ascontiguousarray(array, dtype=np.float32))
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=[output], inputs=[tensor])
    response = await request.async_exec()
    if response.has_error():
        raise RuntimeError(f"model {model}: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, output).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = read_yaml(PACKAGE / "config.yaml")
        self.settings = config["Global"]
        det, cls, rec = config["Det"], config["Cls"], config["Rec"]
        self.load = LoadImage()
        self.det_pre = DetPreProcess(det["limit_side_len"], det["limit_type"], det["mean"], det["std"])
        self.det_post = DBPostProcess(
            thresh=det["thresh"],
            box_thresh=det["box_thresh"],
            max_candidates=det["max_candidates"],
            unclip_ratio=det["unclip_ratio"],
            score_mode=det["score_mode"],
            use_dilation=det["use_dilation"],
        )
        self.cls_shape, self.cls_thresh = cls["cls_image_shape"], cls["cls_thresh"]
        self.cls_post = ClsPostProcess(cls["label_list"])
        self.rec_shape, self.rec_group = rec["rec_img_shape"], rec["rec_batch_num"]
        # The recogniser's alphabet is in its ONNX metadata (RapidOCR reads it the same way).
        session = onnxruntime.InferenceSession(str(PACKAGE / rec["model_path"]), providers=["CPUExecutionProvider"])
        alphabet = session.get_modelmeta().custom_metadata_map["character"].splitlines()
        del session
        self.rec_post = CTCLabelDecode(character=alphabet)

    async def execute(self, requests):
        shapes, jobs = [], []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            shapes.append(images.shape)
            jobs.append(asyncio.gather(*(self.read(bytes(image)) for image in images.reshape(-1))))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        responses = []
        for shape, result in zip(shapes, results, strict=True):
            if isinstance(result, BaseException):
                error = pb_utils.TritonError(f"OCR failed: {type(result).__name__}: {result}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            rows = [json.dumps(lines).encode("utf-8") for lines in result]
            output = np.array(rows, dtype=np.object_).reshape(shape)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", output)]))
        return responses

    async def read(self, data):
        """One page -> its lines."""
        image = self.load(data)
        raw_h, raw_w = image.shape[:2]
        image, ratio_h, ratio_w, top = self.prepare(image)
        tensor = self.det_pre(image)
        if tensor is None:
            return []
        maps = await _infer("det", tensor, "maps")
        boxes, _ = self.det_post(maps, image.shape[:2])
        boxes = _clean_boxes(boxes, image.shape[0], image.shape[1])
        if not boxes:
            return []
        boxes = RapidOCR.sorted_boxes(np.array(boxes))
        crops = [_crop(image, box) for box in boxes]
        crops = await self.classify(crops)
        texts = await self.recognise(crops)

        corners = np.array(boxes, dtype=np.float32)
        corners[:, :, 1] -= top
        corners[:, :, 0] *= ratio_w
        corners[:, :, 1] *= ratio_h
        corners = np.where(corners < 0, 0, corners)
        corners[..., 0] = np.where(corners[..., 0] > raw_w, raw_w, corners[..., 0])
        corners[..., 1] = np.where(corners[..., 1] > raw_h, raw_h, corners[..., 1])
        return [
            {"box": box.tolist(), "text": text, "score": float(score)}
            for box, (text, score) in zip(corners, texts, strict=True)
            if float(score) >= self.settings["text_score"]
        ]

    def prepare(self, image):
        """Scale into RapidOCR's side limits, then letterbox a very flat page."""
        ratio_h = ratio_w = 1.0
        if max(image.shape[:2]) > self.settings["max_side_len"]:
            image, ratio_h, ratio_w = reduce_max_side(image, self.settings["max_side_len"])
        if min(image.shape[:2]) < self.settings["min_side_len"]:
            image, ratio_h, ratio_w = increase_min_side(image, self.settings["min_side_len"])
        height, width = image.shape[:2]
        limit = self.settings["width_height_ratio"]
        top = 0
        if height <= self.settings["min_height"] or (limit != -1 and width / height > limit):
            target = max(int(width / limit), self.settings["min_height"]) * 2
            top = int(abs(target - height) / 2)
            image = add_round_letterbox(image, (top, top, 0, 0))
        return image, ratio_h, ratio_w, top

    async def classify(self, crops):
        """Every line of the page through cls; lines read as upside down are turned."""
        _, height, width = self.cls_shape
        batch = np.stack(
            [_normalise(c, _fitted_width(c.shape[1] / c.shape[0], height, width), height, width) for c in crops]
        )
        chunks = [batch[start : start + CLS_CHUNK] for start in range(0, len(batch), CLS_CHUNK)]
        probs = np.concatenate(await asyncio.gather(*(_infer("cls", chunk, "probs") for chunk in chunks)))
        turned = []
        for crop, (label, score) in zip(crops, self.cls_post(probs), strict=True):
            turned.append(cv2.rotate(crop, 1) if "180" in label and score > self.cls_thresh else crop)
        return turned

    async def recognise(self, crops):
        """Lines in aspect-ratio order, in groups padded to the group's widest; one rec request each."""
        _, height, base_width = self.rec_shape
        ratios = [crop.shape[1] / float(crop.shape[0]) for crop in crops]
        order = np.argsort(np.array(ratios))
        groups = [order[start : start + self.rec_group] for start in range(0, len(crops), self.rec_group)]

        async def group_text(indices):
            widest = max(base_width / height, *(ratios[i] for i in indices))
            padded = int(height * widest)
            batch = np.stack(
                [_normalise(crops[i], _fitted_width(ratios[i], height, padded), height, padded) for i in indices]
            )
            return self.rec_post(await _infer("rec", batch, "probs"))

        texts = [None] * len(crops)
        for indices, decoded in zip(groups, await asyncio.gather(*(group_text(g) for g in groups)), strict=True):
            for index, (text, score) in zip(indices, decoded, strict=True):
                texts[index] = (text, score)
        return texts
