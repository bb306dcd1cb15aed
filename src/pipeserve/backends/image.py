"""Image backends on OpenCV, under TorchPipe's names. Needs ``pipeserve[vision]``.

Images are numpy arrays, HWC uint8, BGR unless the item's ``color`` key says ``rgb``.

* ``DecodeMat``: JPEG/PNG/... bytes -> image (``color = "bgr"``). Undecodable bytes give no
  ``result`` (so the default ``swap`` of the next stage ends the request); empty or non-bytes
  data is an error.
* ``ResizeMat``: to ``resize_h`` x ``resize_w``.
* ``cvtColorMat`` (alias ``CvtColorMat``): to ``color = "rgb"`` or ``"bgr"``, tracking the item's
  ``color`` key (no-op when already there).
* ``ResizePadMat``: fit inside ``max_h`` x ``max_w`` keeping the aspect ratio, pad bottom/right
  with ``pad_value``; records ``inverse_trans``, a 2x3 affine matrix from output to input pixels.
* ``FixHResizePadMat``: height ``resize_h`` keeping the aspect ratio (width at most ``max_w``),
  pad right to ``max_w`` (text-line recognisers); records ``inverse_trans`` too.
* ``CropMat``: crop to ``_box = [x1, y1, x2, y2]`` (clipped to the image).
* ``PerspectiveTransformMat``: warp the quadrilateral ``_box = [[x, y] x 4]`` (clockwise from
  top-left) to an upright rectangle as wide and tall as its longer edges.
* ``Mat2Tensor``: HWC uint8 -> CHW float32 (``layout = "NCHW"`` adds a batch axis), optional
  ``mean``/``std`` per channel; a torch tensor instead when ``device`` is set (``cpu``, ``cuda:0``).

The tensor path: ``ResizeMat``, ``cvtColorMat`` and ``Mat2Tensor`` also take an HWC image as a
torch tensor, on any device, and work on it with torch where it lies (a GPU's data stays on the
GPU; wrap them in ``Torch[...]`` to run on the instance's CUDA stream and synchronise). They give
what the OpenCV path gives for the same pixels: colour conversion and ``Mat2Tensor`` exactly (to
float32 rounding), ``ResizeMat`` (bilinear, half-pixel centres, no antialiasing: OpenCV's
``INTER_LINEAR``) within one grey level per pixel, as OpenCV rounds its weights to 11 bits.
The tensor path imports nothing: it knows tensors only once torch is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from ..backend import Backend, Options, require
from ..config import get_float, get_int, get_list, get_str
from ..errors import ConfigError, InputError

__all__ = [
    "CropMat",
    "DecodeMat",
    "FixHResizePadMat",
    "Mat2Tensor",
    "PerspectiveTransformMat",
    "ResizeMat",
    "ResizePadMat",
    "cvtColorMat",
]

Item = dict[str, Any]


def _torch_of(data: Any) -> Any:
    """The torch module when ``data`` is a torch tensor, else None (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(data, torch.Tensor) else None


class _PerItem(Backend):
    """A backend that processes the items of a batch one by one (OpenCV calls release the GIL)."""

    #: Whether ``apply`` also takes torch tensors (the tensor path; see the module docstring).
    tensors: ClassVar[bool] = False

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.cv2: Any = require("cv2", "vision")
        self.np: Any = require("numpy", "vision")

    def forward(self, items: list[Item]) -> None:
        for item in items:
            self.apply(item)

    def apply(self, item: Item) -> None:
        raise NotImplementedError

    def image(self, item: Item) -> Any:
        data = item["data"]
        tensor = self.tensors and _torch_of(data) is not None
        if not (isinstance(data, self.np.ndarray) or tensor) or data.ndim not in (2, 3) or not _size_of(data):
            shape = getattr(data, "shape", None)
            shape = tuple(shape) if shape is not None else None
            hint = "" if self.tensors or _torch_of(data) is None else " (tensors: ResizeMat, cvtColorMat, Mat2Tensor)"
            name = type(self).__name__
            raise ValueError(f"{name} expects an HWC image array, got {type(data).__name__} {shape}{hint}")
        return data


def _size_of(data: Any) -> int:
    size = data.size
    return int(size if isinstance(size, int) else data.numel())


class DecodeMat(_PerItem):
    """Encoded bytes -> BGR image; undecodable -> no result."""

    def apply(self, item: Item) -> None:
        data = item["data"]
        if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
            got = f"{type(data).__name__} of {_size(data)}"
            raise InputError(f"DecodeMat expects non-empty encoded image bytes, got {got}")
        image = self.cv2.imdecode(self.np.frombuffer(data, dtype=self.np.uint8), self.cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            item.pop("result", None)
            return
        item["result"] = image
        item["color"] = "bgr"


def _size(data: Any) -> str:
    try:
        return f"{len(data)} bytes"
    except TypeError:
        return "no length"


class ResizeMat(_PerItem):
    """Resize to ``resize_h`` x ``resize_w`` (an array with OpenCV, a tensor with torch)."""

    tensors = True

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.size = (
            get_int(params, "resize_w", node=options.node, minimum=1),
            get_int(params, "resize_h", node=options.node, minimum=1),
        )

    def apply(self, item: Item) -> None:
        image = self.image(item)
        torch = _torch_of(image)
        if torch is not None:
            item["result"] = _resize_tensor(torch, image, self.size)
            return
        item["result"] = self.cv2.resize(image, self.size, interpolation=self.cv2.INTER_LINEAR)


def _resize_tensor(torch: Any, image: Any, size: tuple[int, int]) -> Any:
    """OpenCV's ``INTER_LINEAR`` resize of an HWC tensor to ``size`` (width, height), with torch on
    the tensor's device: bilinear, half-pixel centres, no antialiasing; uint8 rounded to nearest."""
    width, height = size
    if tuple(image.shape[:2]) == (height, width):
        return image.clone()
    planes = (image if image.ndim == 3 else image[:, :, None]).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(planes, size=(height, width), mode="bilinear", align_corners=False)
    result = resized[0].permute(1, 2, 0)
    if not image.is_floating_point():
        info = torch.iinfo(image.dtype)
        result = result.round_().clamp_(info.min, info.max)
    result = result.to(image.dtype)
    return (result if image.ndim == 3 else result[:, :, 0]).contiguous()


class cvtColorMat(_PerItem):
    """Convert to ``color`` (rgb|bgr), tracking the item's ``color`` key (arrays and tensors)."""

    tensors = True

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.color = get_str(params, "color", node=options.node).lower()
        if self.color not in ("rgb", "bgr"):
            raise ConfigError(f"expected 'rgb' or 'bgr', got {self.color!r}", node=options.node, key="color")

    def apply(self, item: Item) -> None:
        image = self.image(item)
        current = str(item.get("color", "bgr")).lower()
        if current != self.color and image.ndim == 3:
            if _torch_of(image) is None:
                image = self.cv2.cvtColor(image, self.cv2.COLOR_BGR2RGB)  # the same swap both ways
            elif image.shape[2] == 3:
                image = image.flip(2)  # a copy, as OpenCV's
            else:
                raise ValueError(f"cvtColorMat expects 3 channels to swap, got an HWC tensor {tuple(image.shape)}")
        item["result"] = image
        item["color"] = self.color


class _ResizePad(_PerItem):
    """Resize to a size the subclass picks, pad bottom/right with ``pad_value`` to a fixed size
    (width ``max_w``), and record ``inverse_trans`` (output pixels -> input pixels)."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.max_w = get_int(params, "max_w", node=options.node, minimum=1)
        self.pad_value = get_float(params, "pad_value", 0.0, node=options.node)

    def target(self, height: int, width: int) -> tuple[int, int, int]:
        """The resized width and height, and the padded height, for a ``width`` x ``height`` image."""
        raise NotImplementedError

    def apply(self, item: Item) -> None:
        image = self.image(item)
        height, width = image.shape[:2]
        new_w, new_h, padded_h = self.target(height, width)
        resized = self.cv2.resize(image, (new_w, new_h), interpolation=self.cv2.INTER_LINEAR)
        bottom, right = padded_h - new_h, self.max_w - new_w
        if bottom > 0 or right > 0:
            value = [self.pad_value] * (resized.shape[2] if resized.ndim == 3 else 1)
            resized = self.cv2.copyMakeBorder(
                resized, 0, max(0, bottom), 0, max(0, right), self.cv2.BORDER_CONSTANT, value=value
            )
        item["result"] = resized
        item["inverse_trans"] = self.np.array([[width / new_w, 0, 0], [0, height / new_h, 0]], dtype=self.np.float64)


class ResizePadMat(_ResizePad):
    """Fit inside ``max_h`` x ``max_w`` keeping the aspect ratio; pad bottom/right."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.max_h = get_int(params, "max_h", node=options.node, minimum=1)

    def target(self, height: int, width: int) -> tuple[int, int, int]:
        scale = min(self.max_h / height, self.max_w / width)
        return max(1, round(width * scale)), max(1, round(height * scale)), self.max_h


class FixHResizePadMat(_ResizePad):
    """Height ``resize_h`` keeping the aspect ratio (width at most ``max_w``); pad right to ``max_w``."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.resize_h = get_int(params, "resize_h", node=options.node, minimum=1)

    def target(self, height: int, width: int) -> tuple[int, int, int]:
        new_w = min(self.max_w, max(1, -(-width * self.resize_h // height)))  # ceil
        return new_w, self.resize_h, self.resize_h


class CropMat(_PerItem):
    """Crop to ``item["_box"] = [x1, y1, x2, y2]``, clipped to the image."""

    def apply(self, item: Item) -> None:
        image = self.image(item)
        box = item.get("_box")
        if box is None or len(box) != 4:
            raise ValueError(f"CropMat expects '_box' = [x1, y1, x2, y2], got {box!r}")
        height, width = image.shape[:2]
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(width, int(box[2])), min(height, int(box[3]))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"CropMat: box {list(box)} is empty inside a {width}x{height} image")
        item["result"] = image[y1:y2, x1:x2].copy()


class PerspectiveTransformMat(_PerItem):
    """Warp the quadrilateral ``item["_box"]`` (4 points, clockwise from top-left) upright."""

    def apply(self, item: Item) -> None:
        image = self.image(item)
        np = self.np
        box = np.asarray(item.get("_box"), dtype=np.float32)
        if box.shape != (4, 2):
            raise ValueError(f"PerspectiveTransformMat expects '_box' as 4 [x, y] points, got shape {box.shape}")
        width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
        height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
        width, height = max(width, 1), max(height, 1)
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
        matrix = self.cv2.getPerspectiveTransform(box, target)
        item["result"] = self.cv2.warpPerspective(
            image, matrix, (width, height), borderMode=self.cv2.BORDER_REPLICATE, flags=self.cv2.INTER_CUBIC
        )


class Mat2Tensor(_PerItem):
    """HWC uint8 -> CHW (or NCHW) float32, optional ``mean``/``std``; a torch tensor with ``device``,
    or for a tensor image (on its own device unless ``device`` is set)."""

    tensors = True

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        node = options.node
        self.layout = get_str(params, "layout", "CHW", node=node).upper()
        if self.layout not in ("CHW", "NCHW"):
            raise ConfigError(f"expected 'CHW' or 'NCHW', got {self.layout!r}", node=node, key="layout")
        mean = [float(v) for v in get_list(params, "mean", node=node)]
        std = [float(v) for v in get_list(params, "std", node=node)]
        self.mean = self.np.asarray(mean, dtype=self.np.float32).reshape(-1, 1, 1) if mean else None
        self.std = self.np.asarray(std, dtype=self.np.float32).reshape(-1, 1, 1) if std else None
        self.device = params.get("device")
        if self.device is not None:
            self.torch: Any = require("torch", "torch")
        self.constants: dict[Any, tuple[Any, Any]] = {}  # per device: mean and std as tensors

    def apply(self, item: Item) -> None:
        image = self.image(item)
        if image.ndim == 2:
            image = image[:, :, None]
        torch = _torch_of(image)
        if torch is not None:
            item["result"] = self._tensor(torch, image)
            return
        tensor = image.transpose(2, 0, 1).astype(self.np.float32)
        if self.mean is not None:
            tensor -= self.mean
        if self.std is not None:
            tensor /= self.std
        if self.layout == "NCHW":
            tensor = tensor[None]
        tensor = self.np.ascontiguousarray(tensor)
        item["result"] = tensor if self.device is None else self.torch.from_numpy(tensor).to(str(self.device))

    def _tensor(self, torch: Any, image: Any) -> Any:
        """The tensor path of :meth:`apply`: the same arithmetic in float32, on the image's device
        (or ``device``; a host image is moved first, so the float work is done there)."""
        if self.device is not None:
            image = image.to(str(self.device), non_blocking=True)
        tensor = image.permute(2, 0, 1).to(torch.float32)
        mean, std = self._constants(torch, tensor.device)
        if mean is not None:
            tensor = tensor - mean
        if std is not None:
            tensor = tensor / std
        if self.layout == "NCHW":
            tensor = tensor[None]
        return tensor.contiguous()

    def _constants(self, torch: Any, device: Any) -> tuple[Any, Any]:
        """``mean`` and ``std`` as tensors on ``device``, copied there once (not per image)."""
        if device not in self.constants:
            mean = None if self.mean is None else torch.from_numpy(self.mean).to(device)
            std = None if self.std is None else torch.from_numpy(self.std).to(device)
            self.constants[device] = (mean, std)
        return self.constants[device]
