"""The PP-OCR service built on Ray Serve the way a Ray Serve user builds it: the baseline peer of the
benchmark that runs pipeserve's own OCR pipeline on Ray Serve.

Four deployments (``build_app``)::

    HTTP POST <route prefix>  (body: the encoded page, JPEG or PNG)
      -> Ingress (starlette Request; RapidOCR's Python pre/post-processing, no network)
           -> Det  (the detector:  @serve.batch of pages, run one by one)
           -> Cls  (the direction classifier: @serve.batch of per-page lists of line crops)
           -> Rec  (the recogniser: @serve.batch of per-page lists of line crops)
      <- JSON [{"box": [[x, y] x 4], "text": str, "score": float}, ...]

The ingress reaches the others through DeploymentHandles given to it by ``.bind(...)`` and awaits
their responses. It does what ``benchmarks/triton_ocr/ocr_bls/1/model.py`` (the same service on
Triton BLS) does, with rapidocr_onnxruntime's own pieces and the limits of the wheel's config.yaml,
so results match ``pipeserve.examples.ocr`` line for line: decode, scale into RapidOCR's side limits,
letterbox very flat pages, ``DetPreProcess`` -> Det -> ``DBPostProcess``, box clean-up,
``RapidOCR.sorted_boxes``, one perspective crop per box -> Cls -> lines read upside down are turned
-> Rec -> boxes back to the original pixels, lines under ``text_score`` dropped. Its CPU work runs in
``asyncio.to_thread`` so that the replica's event loop keeps taking requests and awaiting handles.

The model deployments (one per ONNX network, the files the rapidocr_onnxruntime wheel ships):

* Det: pages have different sizes, so a batch of up to ``det_max_batch`` pages runs page by page
  (as a Ray user would, rather than padding pages to one size, which changes the boxes); batching
  only saves per-request overhead here. 4 pages: at most one more page's latency waits in a batch.
* Cls: the line crops of every request of a batch are flattened, resized to 3 x 48 x 192 and
  zero-padded on the right as RapidOCR pads them, run in chunks of at most 32 lines (pipeserve's
  ``cls`` node takes 32 lines a call too), decoded with ``ClsPostProcess`` and split back per request.
  Each line's input does not depend on the others', so batching across pages changes no result.
* Rec: as RapidOCR groups lines: sorted by aspect ratio, groups of ``rec_batch_num`` (6), each
  padded to its group's widest; decoded with ``CTCLabelDecode`` and split back. With
  ``rec_grouping="batch"`` (the default, what a Ray user does) the lines of all requests of the batch
  are grouped together: fuller groups, less padding. The recogniser's output (spaces above all)
  depends on that padding, so a line batched with other pages' lines can read slightly differently
  from RapidOCR and pipeserve, which group each page on its own; ``rec_grouping="page"`` groups per
  page (identical results, groups of different pages run one after the other). A request alone in
  its batch is read identically either way. ``rec_max_batch`` (6 requests) keeps a batch's lines at
  a few groups' worth, so a page does not wait behind many other pages' lines.

Every ONNX session: ``intra_op_num_threads=1``, ``inter_op_num_threads=1``, sequential execution,
``allow_spinning`` "0" (intra and inter op): the settings of the pipeserve side on a 2-core machine.
One thread per session keeps each replica to about one core, so det, cls, rec and the ingress work
side by side on the cores instead of oversubscribing them; no spinning, so idle sessions leave the
cores to the busy ones. ``@serve.batch`` keeps ``max_concurrent_batches=1``: one session run at a
time per replica. The model deployments take up to twice their batch size of ongoing requests, so
the next batch fills while one runs; the ingress up to ``INGRESS_ONGOING`` requests per replica.

Logical CPUs (``build_app(cpus=...)``, scheduling only, Ray does not pin cores): a quarter of
``cpus`` each to the ingress (shared by its ``ingress_replicas`` replicas), Det, Cls and Rec, so the
app fits a ``ray.init(num_cpus=cpus)`` cluster exactly (Serve's controller and proxy take 0 CPUs).

Workers import this module by reference when it is imported as ``benchmarks.ray_plain_ocr``: Ray puts
the driver's working directory on its workers' ``sys.path``, so a driver started in the repository
root (``benchmarks`` is a namespace package there) needs nothing else; from elsewhere pass
``runtime_env={"py_modules": [<repo>/benchmarks]}`` to ``ray.init``. Run as a script, the module is
``__main__`` and Ray pickles the deployments by value instead; that works too. The deployments import
only installed packages (ray, numpy, cv2, onnxruntime, rapidocr_onnxruntime, starlette).

    python benchmarks/ray_plain_ocr.py --check    # serve, read 2 bundled pages over HTTP, compare
    python benchmarks/ray_plain_ocr.py --port 8000 [--route /ocr]   # serve until SIGINT/SIGTERM

Everything binds 127.0.0.1: Ray's node (``_node_ip_address`` and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0),
Serve's HTTP proxy, and each replica's inter-deployment gRPC server (``_grpc_on_loopback``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import rapidocr_onnxruntime
from rapidocr_onnxruntime.ch_ppocr_cls.utils import ClsPostProcess
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr_onnxruntime.main import RapidOCR
from rapidocr_onnxruntime.utils import LoadImage, add_round_letterbox, increase_min_side, read_yaml, reduce_max_side
from rapidocr_onnxruntime.utils.load_image import LoadImageError
from rapidocr_onnxruntime.utils.process_img import ResizeImgError
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["Cls", "Det", "Ingress", "Rec", "build_app", "main", "ocr_over_handle", "ocr_sync"]

PACKAGE = Path(rapidocr_onnxruntime.__file__).parent
MODELS = PACKAGE / "models"
DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
CLS_CHUNK = 32  # lines per classifier run, as pipeserve's cls node (max = 32)
INGRESS_ONGOING = 64  # concurrent requests per ingress replica (each mostly awaits the models)
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


def _settings() -> dict[str, Any]:
    """RapidOCR's defaults: the wheel's config.yaml."""
    return read_yaml(str(PACKAGE / "config.yaml"))


def _session(name: str) -> Any:
    """One ONNX Runtime CPU session: one intra-op and one inter-op thread, sequential, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(MODELS / name), options, providers=["CPUExecutionProvider"])


def _run(session: Any, batch: Any) -> Any:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _grpc_on_loopback() -> None:
    """Have this replica's inter-deployment gRPC server bind 127.0.0.1 rather than ``[::]``.

    Ray Serve 2.60 starts that server with ``add_port_to_grpc_server(server, "[::]:0")`` after the
    deployment's constructor has run; wrapping the function here (in the replica's process) changes
    only the address.
    """
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_loopback", False):
        return

    def bind_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        return original(server, address)

    bind_loopback._loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind_loopback


def _normalise(image: Any, width: int, height: int, padded_width: int) -> Any:
    """Resize to ``width`` x ``height``, scale to [-1, 1], CHW, zero-padded on the right."""
    resized = cv2.resize(image, (width, height)).astype("float32").transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padded = np.zeros((3, height, padded_width), dtype=np.float32)
    padded[:, :, :width] = resized
    return padded


def _fitted_width(ratio: float, height: int, limit: int) -> int:
    """RapidOCR's resized width of a line of aspect ratio ``ratio``: ceil(height * ratio), at most ``limit``."""
    return min(limit, math.ceil(height * ratio))


def _clean_boxes(boxes: Any, height: int, width: int) -> list[Any]:
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


def _crop(image: Any, box: Any) -> Any:
    """The box warped upright; a crop at least 1.5 times taller than wide is turned a quarter."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _split(flat: list[Any], lengths: list[int]) -> list[list[Any]]:
    """``flat`` cut back into consecutive runs of ``lengths``."""
    out, start = [], 0
    for length in lengths:
        out.append(flat[start : start + length])
        start += length
    return out


def _rec_groups(ratios: list[float], lengths: list[int], size: int, per_page: bool) -> list[Any]:
    """RapidOCR's recognition groups (indices into the flat list of lines): lines in aspect-ratio
    order, ``size`` at a time; over all lines of the batch, or within each page."""
    spans = []
    if per_page:
        start = 0
        for length in lengths:
            spans.append(np.arange(start, start + length))
            start += length
    else:
        spans.append(np.arange(len(ratios)))
    groups = []
    for span in spans:
        order = span[np.argsort(np.array([ratios[i] for i in span]))] if len(span) else span
        groups.extend(order[start : start + size] for start in range(0, len(order), size))
    return groups


@serve.deployment(logging_config=QUIET)
class Det:
    """The text detector: a batch of det tensors (1 x 3 x H x W, sizes differ) -> probability maps."""

    def __init__(self, max_batch: int = 4, wait_s: float = 0.005) -> None:
        _grpc_on_loopback()
        self.session = _session(DET_MODEL)
        self.__call__.set_max_batch_size(max_batch)
        self.__call__.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def __call__(self, tensors: list[Any]) -> list[Any]:
        return await asyncio.to_thread(lambda: [_run(self.session, tensor) for tensor in tensors])


@serve.deployment(logging_config=QUIET)
class Cls:
    """The direction classifier: per request a list of line crops -> per line ``(label, score)``."""

    def __init__(self, max_batch: int = 32, wait_s: float = 0.005) -> None:
        _grpc_on_loopback()
        settings = _settings()["Cls"]
        self.shape = settings["cls_image_shape"]
        self.decode = ClsPostProcess(settings["label_list"])
        self.session = _session(CLS_MODEL)
        self.__call__.set_max_batch_size(max_batch)
        self.__call__.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def __call__(self, pages: list[list[Any]]) -> list[list[tuple[str, float]]]:
        return await asyncio.to_thread(self.classify, pages)

    def classify(self, pages: list[list[Any]]) -> list[list[tuple[str, float]]]:
        crops = [crop for page in pages for crop in page]
        if not crops:
            return [[] for _ in pages]
        _, height, width = self.shape
        batch = np.stack(
            [_normalise(c, _fitted_width(c.shape[1] / c.shape[0], height, width), height, width) for c in crops]
        )
        probs = np.concatenate([_run(self.session, batch[i : i + CLS_CHUNK]) for i in range(0, len(batch), CLS_CHUNK)])
        labels = [(str(label), float(score)) for label, score in self.decode(probs)]
        return _split(labels, [len(page) for page in pages])


@serve.deployment(logging_config=QUIET)
class Rec:
    """The recogniser: per request a list of (upright) line crops -> per line ``(text, score)``."""

    def __init__(
        self, max_batch: int = 6, wait_s: float = 0.005, grouping: str = "batch", lines: int | None = None
    ) -> None:
        _grpc_on_loopback()
        if grouping not in ("batch", "page"):
            raise ValueError(f"rec grouping is 'batch' or 'page', not {grouping!r}")
        settings = _settings()["Rec"]
        # Lines per model call: RapidOCR's rec_batch_num (6) unless told (1: as pipeserve's ocr.toml).
        self.shape, self.group = settings["rec_img_shape"], lines or int(settings["rec_batch_num"])
        self.per_page = grouping == "page"
        self.session = _session(REC_MODEL)
        # The alphabet is in the model's metadata (RapidOCR reads it the same way).
        self.decode = CTCLabelDecode(
            character=self.session.get_modelmeta().custom_metadata_map["character"].splitlines()
        )
        self.__call__.set_max_batch_size(max_batch)
        self.__call__.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=6, batch_wait_timeout_s=0.005)
    async def __call__(self, pages: list[list[Any]]) -> list[list[tuple[str, float]]]:
        return await asyncio.to_thread(self.recognise, pages)

    def recognise(self, pages: list[list[Any]]) -> list[list[tuple[str, float]]]:
        crops = [crop for page in pages for crop in page]
        lengths = [len(page) for page in pages]
        _, height, base_width = self.shape
        ratios = [crop.shape[1] / float(crop.shape[0]) for crop in crops]
        texts: list[Any] = [None] * len(crops)
        for group in _rec_groups(ratios, lengths, self.group, self.per_page):
            padded = int(height * max(base_width / height, *(ratios[i] for i in group)))
            batch = np.stack(
                [_normalise(crops[i], _fitted_width(ratios[i], height, padded), height, padded) for i in group]
            )
            for index, line in zip(group, self.decode(_run(self.session, batch)), strict=True):
                texts[index] = (str(line[0]), float(line[1]))
        return _split(texts, lengths)


@serve.deployment(logging_config=QUIET)
class Ingress:
    """HTTP ``POST`` (the encoded page as the body) -> the JSON lines; ``ocr(image_bytes)`` for handles."""

    def __init__(self, det: Any, cls: Any, rec: Any) -> None:
        _grpc_on_loopback()
        self.det, self.cls, self.rec = det, cls, rec
        config = _settings()
        self.settings = config["Global"]
        det_cfg, cls_cfg = config["Det"], config["Cls"]
        self.load = LoadImage()
        self.det_pre = DetPreProcess(det_cfg["limit_side_len"], det_cfg["limit_type"], det_cfg["mean"], det_cfg["std"])
        self.det_post = DBPostProcess(
            thresh=det_cfg["thresh"],
            box_thresh=det_cfg["box_thresh"],
            max_candidates=det_cfg["max_candidates"],
            unclip_ratio=det_cfg["unclip_ratio"],
            score_mode=det_cfg["score_mode"],
            use_dilation=det_cfg["use_dilation"],
        )
        self.cls_thresh = cls_cfg["cls_thresh"]

    async def __call__(self, request: Request) -> JSONResponse:
        body = await request.body()
        try:
            lines = await self.ocr(body)
        except (LoadImageError, ResizeImgError, OSError, ValueError) as exc:
            return JSONResponse({"error": f"not a readable page ({type(exc).__name__}: {exc})"}, status_code=400)
        return JSONResponse(lines)

    async def ocr(self, image_bytes: bytes) -> list[dict[str, Any]]:
        """One page -> its lines ``{"box", "text", "score"}``."""
        page = await asyncio.to_thread(self.prepare, image_bytes)
        if page["tensor"] is None:  # too small to detect anything
            return []
        maps = await self.det.remote(page.pop("tensor"))
        boxes, crops = await asyncio.to_thread(self.lines, page["image"], maps)
        if not crops:
            return []
        directions = await self.cls.remote(crops)
        crops = [
            cv2.rotate(crop, 1) if "180" in label and score > self.cls_thresh else crop
            for crop, (label, score) in zip(crops, directions, strict=True)
        ]
        texts = await self.rec.remote(crops)
        return self.finish(page, boxes, texts)

    def prepare(self, data: bytes) -> dict[str, Any]:
        """Decode, scale into RapidOCR's side limits, letterbox a very flat page; the det tensor."""
        image = self.load(data)
        raw_h, raw_w = image.shape[:2]
        ratio_h = ratio_w = 1.0
        if max(image.shape[:2]) > self.settings["max_side_len"]:
            image, ratio_h, ratio_w = reduce_max_side(image, self.settings["max_side_len"])
        if min(image.shape[:2]) < self.settings["min_side_len"]:
            image, ratio_h, ratio_w = increase_min_side(image, self.settings["min_side_len"])
        height, width = image.shape[:2]
        limit, top = self.settings["width_height_ratio"], 0
        if height <= self.settings["min_height"] or (limit != -1 and width / height > limit):
            target = max(int(width / limit), self.settings["min_height"]) * 2
            top = int(abs(target - height) / 2)
            image = add_round_letterbox(image, (top, top, 0, 0))
        tensor = self.det_pre(image)
        return {"image": image, "tensor": tensor, "raw": (raw_h, raw_w), "ratio": (ratio_h, ratio_w), "top": top}

    def lines(self, image: Any, maps: Any) -> tuple[Any, list[Any]]:
        """Detector maps -> the sorted boxes and one upright crop per box."""
        boxes, _ = self.det_post(maps, image.shape[:2])
        kept = _clean_boxes(boxes, image.shape[0], image.shape[1])
        if not kept:
            return [], []
        ordered = RapidOCR.sorted_boxes(np.array(kept))
        return ordered, [_crop(image, box) for box in ordered]

    def finish(self, page: dict[str, Any], boxes: Any, texts: list[tuple[str, float]]) -> list[dict[str, Any]]:
        """Boxes back to the original pixels; lines under ``text_score`` dropped."""
        corners = np.array(boxes, dtype=np.float32)
        corners[:, :, 1] -= page["top"]
        ratio_h, ratio_w = page["ratio"]
        corners[:, :, 0] *= ratio_w
        corners[:, :, 1] *= ratio_h
        raw_h, raw_w = page["raw"]
        corners = np.clip(corners, 0, None)
        corners[..., 0] = np.minimum(corners[..., 0], raw_w)
        corners[..., 1] = np.minimum(corners[..., 1], raw_h)
        return [
            {"box": box.tolist(), "text": text, "score": score}
            for box, (text, score) in zip(corners, texts, strict=True)
            if score >= self.settings["text_score"]
        ]


def _share(value: float) -> float:
    """A logical CPU share rounded down to Ray's resolution (1e-4), so that the shares' sum fits."""
    return math.floor(value * 10_000) / 10_000


def build_app(
    *,
    cpus: float = 2.0,
    det_max_batch: int = 4,
    cls_max_batch: int = 32,
    rec_max_batch: int = 6,
    batch_wait_s: float = 0.005,
    ingress_replicas: int = 1,
    rec_grouping: str = "batch",
    rec_lines: int | None = None,
    det_replicas: int = 1,
    rec_replicas: int = 1,
) -> Any:
    """Ingress -> Det, Cls, Rec (replicas: ``ingress_replicas``, ``det_replicas``, 1, ``rec_replicas``).

    Logical CPUs: an equal share of ``cpus`` to every replica: the whole app fits ``cpus``.
    ``rec_grouping`` is "batch" or "page" (module docstring); ``rec_lines`` the lines per
    recogniser call (None: RapidOCR's 6).
    """
    # Logical CPUs only place replicas (nothing is pinned): every replica gets an equal share.
    each = _share(cpus / (ingress_replicas + det_replicas + 1 + rec_replicas))
    det = Det.options(
        num_replicas=det_replicas, max_ongoing_requests=2 * det_max_batch, ray_actor_options={"num_cpus": each}
    ).bind(det_max_batch, batch_wait_s)
    cls = Cls.options(
        num_replicas=1, max_ongoing_requests=2 * cls_max_batch, ray_actor_options={"num_cpus": each}
    ).bind(cls_max_batch, batch_wait_s)
    rec = Rec.options(
        num_replicas=rec_replicas, max_ongoing_requests=2 * rec_max_batch, ray_actor_options={"num_cpus": each}
    ).bind(rec_max_batch, batch_wait_s, rec_grouping, rec_lines)
    return Ingress.options(
        num_replicas=ingress_replicas,
        max_ongoing_requests=INGRESS_ONGOING,
        ray_actor_options={"num_cpus": each},
    ).bind(det, cls, rec)


async def ocr_over_handle(handle: Any, image_bytes: bytes) -> list[dict[str, Any]]:
    """One page's lines through the ingress's DeploymentHandle (``serve.run``'s return value)."""
    return await handle.ocr.remote(image_bytes)


def ocr_sync(handle: Any, image_bytes: bytes) -> list[dict[str, Any]]:
    """``ocr_over_handle`` for synchronous callers (not inside a running event loop)."""
    return handle.ocr.remote(image_bytes).result()


def _post(url: str, data: bytes) -> list[dict[str, Any]]:
    import json
    import urllib.request

    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _check(url: str, handle: Any, count: int) -> int:
    """Read ``count`` bundled pages over HTTP and through the handle; compare with pipeserve."""
    from pipeserve.examples import ocr
    from pipeserve.examples.ocr.samples import compare

    folder = Path(ocr.__file__).parent / "images"
    pages = [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.jpg"))[:count]]
    with ocr.pipeline() as pipe:  # pipeserve's in-process OCR, the reference
        expected = {name: pipe({"data": data})["result"] for name, data in pages}
    failures = 0
    for name, data in pages:
        _post(url, data)  # warm-up (first calls load lazily)
        times, lines = [], []
        for _ in range(3):
            start = time.perf_counter()
            lines = _post(url, data)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        by_handle = ocr_sync(handle, data)
        handle_s = time.perf_counter() - start
        counts = compare(lines, expected[name])
        print(
            f"{name}: {counts['lines']} lines ({len(lines)} here, {len(expected[name])} pipeserve), "
            f"same text {counts['same_text']}, boxes within 2 px {counts['same_box']}; "
            f"HTTP {min(times) * 1000:.0f} ms best of 3 (median {sorted(times)[1] * 1000:.0f} ms), "
            f"handle {handle_s * 1000:.0f} ms, handle result {'same' if by_handle == lines else 'DIFFERENT'}",
            flush=True,
        )
        failures += counts["same_text"] != counts["lines"] or counts["same_box"] != counts["lines"]
        failures += by_handle != lines
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="read bundled pages over HTTP, compare with pipeserve")
    parser.add_argument("--pages", type=int, default=2, help="pages for --check (at most 2 is plenty)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--route", default="/ocr")
    parser.add_argument("--cpus", type=float, default=2.0, help="logical CPUs of the local Ray cluster")
    parser.add_argument("--rec-grouping", choices=("batch", "page"), default="batch")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Without this Ray swaps a node address of 127.0.0.1 for the machine's routable one.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=QUIET)
        handle = serve.run(
            build_app(cpus=args.cpus, rec_grouping=args.rec_grouping), name="plain-ocr", route_prefix=args.route
        )
        url = f"http://127.0.0.1:{args.port}{args.route}"
        if args.check:
            failures = _check(url, handle, args.pages)
            print("check:", "all lines match" if failures == 0 else f"{failures} mismatching pages", flush=True)
            return 1 if failures else 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
            signal.signal(sig, lambda *_: stop.set())
        print(f"ray plain OCR ready at {url}", flush=True)
        stop.wait()
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
