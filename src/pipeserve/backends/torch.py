"""PyTorch backends. Needs ``pipeserve[torch]``.

* ``TorchScript``: ``model`` is a TorchScript file (``torch.jit.save``). PyTorch 2.13 deprecates
  TorchScript; existing files still load (the deprecation warning is silenced here), new models
  are better exported with ``torch.export`` and served with ``TorchExport``.
* ``TorchExport``: ``model`` is a ``torch.export.save`` file (``.pt2``).
* ``TorchModule``: ``module = "package.module:factory"`` builds an ``nn.Module`` (the factory is
  called with no arguments); ``weights`` optionally names a ``state_dict`` file to load.
* ``Torch[X]`` (alias ``SyncTensor[X]``): runs ``X`` on this instance's CUDA stream and
  synchronises before results are handed on; on CPU it passes through.

Keys: ``device`` (``cpu`` by default, ``cuda:N``); ``dtype`` (``float16``, ``bfloat16``,
``float32``: the model's parameters are cast to it once, and floating inputs on the device before
each call; unset, both stay as they are); ``channels_last`` (default false: the model and its 4-D
inputs in channels-last memory order, which the tensor cores of recent GPUs prefer for
convolutions); ``cuda_graphs`` (default false; on a GPU, NOTE [CUDA graphs]); ``torch_threads``
(unset, the default: on CPU
the instance is *elastic* (NOTE [elastic budget] in :mod:`pipeserve.budget`): each batch sets
PyTorch's threads to what the CPU budget grants, all the budget's cores when the other instances
leave them idle, the instance's fair share under load; PyTorch's intra-op pool is process-wide, so
the last grant applies to every PyTorch call from then on. Set, that many threads, always).
Each item's ``data`` is a tensor (or a numpy array) *with* a batch dimension, as TorchPipe
expects (``Mat2Tensor`` with ``layout = "NCHW"`` gives one), or a list of them for a model with
several inputs. The batch is put together along dimension 0 on the model's device (NOTE [GPU
path]), run under ``torch.inference_mode()``, and split back by each item's rows; several outputs
give a list per item. Results stay on the model's device.

NOTE [GPU path]: each instance owns a CUDA stream, and everything a batch does on the GPU is queued
on it: the host-to-device copies of its inputs, the model, the casts. Inputs on the host travel
from page-locked (pinned) memory, so the copy is asynchronous and overlaps other instances' work:
items that are pinned already are copied straight into their rows of the device batch, one copy
each; others are first gathered into one pinned staging tensor with ``torch.cat`` (a host copy that
releases the GIL), then copied in one go. Inputs already on the device are concatenated there. The
instance then waits for its stream (``synchronize``, the GIL released) before the results are
handed on, so the next stage, on any stream or thread, reads finished tensors. The items hold their
inputs until then, and PyTorch's pinned allocator reuses a staging block only once the copy queued
from it has run (it records an event on the stream). A stage that uses another instance's results
on its own stream must likewise synchronise before it returns (every backend here does), since the
caching allocator may reuse a freed result's memory on the stream that made it.

NOTE [CUDA graphs]: with ``cuda_graphs = true`` an instance captures its model as a CUDA graph per
batch size, the rows padded up to a power of two (or to ``max``), on its own stream, sharing one
memory pool, the first time that size comes (after two eager warm-up calls; one capture at a time
in the process, thread-local, so other instances go on serving meanwhile). A batch is then copied
into the graph's input, replayed with one launch instead of one per operator, and its rows of the
outputs are copied out (the next replay overwrites them). Each launch of an eager model is a return
to Python that must take the GIL again, which many client threads make slow; a replay is a handful.
The padding rows hold earlier inputs and their outputs are dropped, so the model must treat rows
independently (as inference models in ``eval`` mode do), and every other dimension must keep its
size. A batch of more rows than ``max`` runs eagerly. Experimental: the replay path ran on an H200
(ResNet-50, one instance); two instances capturing while the other computed failed there
(CUBLAS_STATUS_EXECUTION_FAILED, with thread-local capture one at a time too), so a node with
``cuda_graphs`` runs one instance.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ..backend import Backend, Options, require
from ..config import get_bool, get_int, get_str
from ..errors import ConfigError

__all__ = ["Torch", "TorchExport", "TorchModule", "TorchScript"]

Item = dict[str, Any]


_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _device(params: Mapping[str, Any], options: Options, torch: Any) -> Any:
    name = get_str(params, "device", "cpu", node=options.node)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU", node=options.node, key="device")
    return device


def _dtype(params: Mapping[str, Any], options: Options, torch: Any) -> Any:
    if "dtype" not in params:
        return None
    name = get_str(params, "dtype", node=options.node).lower()
    if name not in _DTYPES:
        raise ConfigError(f"expected one of {list(_DTYPES)}, got {name!r}", node=options.node, key="dtype")
    return getattr(torch, name)


class _Placed(Backend):
    """Common set-up: torch imported, device chosen, a CUDA stream per instance on GPUs."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.torch: Any = require("torch", "torch")
        self.device = _device(params, options, self.torch)
        threads = get_int(params, "torch_threads", options.cpu_threads, node=options.node, minimum=1)
        self.elastic = "torch_threads" not in params and self.device.type == "cpu"
        self.most = max(threads, options.cpu_cores) if self.elastic else threads
        if self.torch.get_num_threads() != threads:
            self.torch.set_num_threads(threads)
        self.stream = self.torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def max_threads(self) -> int:
        return self.most if self.device.type == "cpu" else 1

    def use_threads(self, granted: int) -> int:
        threads = granted if self.elastic else self.most
        if self.torch.get_num_threads() != threads:
            self.torch.set_num_threads(threads)
        return threads

    def on_stream(self) -> Any:
        """A context that runs on this instance's CUDA stream (a no-op on CPU)."""
        if self.stream is None:
            return _Nothing()
        return self.torch.cuda.stream(self.stream)

    def synchronise(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _ModelBackend(_Placed):
    model: Any

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.dtype = _dtype(params, options, self.torch)
        self.channels_last = get_bool(params, "channels_last", False, node=options.node)
        self.graphs: _Graphs | None = None
        if get_bool(params, "cuda_graphs", False, node=options.node):
            if options.instance_num > 1:
                raise ConfigError(
                    "cuda_graphs runs one instance per node: capturing while another instance computes on the "
                    "device failed on an H200 (NOTE [CUDA graphs])",
                    node=options.node,
                    key="cuda_graphs",
                )
            if self.stream is None:
                raise ConfigError("cuda_graphs needs a CUDA device", node=options.node, key="cuda_graphs")
            self.graphs = _Graphs(self.torch, self.stream, self.max())

    def place(self, model: Any, evaluate: bool = True) -> Any:
        """``model`` on the device, cast to ``dtype`` and channels-last if asked, in ``eval`` mode
        unless ``evaluate`` is false (an exported program's module has no modes)."""
        model = model.to(self.device)
        if self.dtype is not None:
            model = model.to(self.dtype)
        if self.channels_last:
            model = model.to(memory_format=self.torch.channels_last)
        return model.eval() if evaluate else model

    def load_model(self, what: str, load: Callable[[str], Any], evaluate: bool = True) -> None:
        """``self.model = load(path of the model key)``, placed; a failure is a ConfigError naming it."""
        path = get_str(self.params, "model", node=self.options.node)
        try:
            self.model = self.place(load(path), evaluate)
        except Exception as exc:
            raise ConfigError(f"cannot load {what} {path!r}: {exc}", node=self.options.node, key="model") from exc

    def forward(self, items: list[Item]) -> None:
        torch = self.torch
        per_item = [self._tensors(item) for item in items]
        rows = [tensors[0].shape[0] for tensors in per_item]
        count = len(per_item[0])
        if any(len(tensors) != count for tensors in per_item):
            raise ValueError(f"every item of a batch needs the same number of inputs, got {[len(t) for t in per_item]}")
        with torch.inference_mode(), self.on_stream():  # NOTE [GPU path]
            inputs = [self._prepare(self._batch([t[i] for t in per_item])) for i in range(count)]
            outputs = self.model(*inputs) if self.graphs is None else self.graphs.run(self.model, inputs)
            self.synchronise()
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for output in outputs:
            if output.shape[0] != sum(rows):
                raise ValueError(f"the model returned {output.shape[0]} rows for {sum(rows)} input rows")
        start = 0
        for item, count in zip(items, rows, strict=True):
            parts = [output[start : start + count] for output in outputs]
            item["result"] = parts[0] if len(parts) == 1 else parts
            start += count

    def _tensors(self, item: Item) -> list[Any]:
        data = item["data"]
        values = list(data) if isinstance(data, (list, tuple)) else [data]
        tensors = []
        for value in values:
            tensor = value if isinstance(value, self.torch.Tensor) else self.torch.as_tensor(value)
            if tensor.ndim == 0:
                raise ValueError("each input needs a batch dimension; got a scalar")
            tensors.append(tensor)
        return tensors

    def _batch(self, parts: list[Any]) -> Any:
        """One input of the batch on the device, queued on the current stream (NOTE [GPU path])."""
        torch, device = self.torch, self.device
        shape, dtype = _batch_shape(parts, torch)
        on_host = [part.device.type == "cpu" for part in parts]
        if device.type == "cpu" or not any(on_host):
            return parts[0].to(device) if len(parts) == 1 else torch.cat([p.to(device) for p in parts], dim=0)
        if not all(on_host):
            return torch.cat([part.to(device, non_blocking=True) for part in parts], dim=0)
        if all(part.is_pinned() and part.dtype == dtype for part in parts):
            batch = torch.empty(shape, dtype=dtype, device=device)
            rows = batch.split([part.shape[0] for part in parts])
            torch._foreach_copy_(rows, parts, non_blocking=True)  # one call: the GIL is taken back once
            return batch
        staging = torch.empty(shape, dtype=dtype, pin_memory=True)
        torch.cat(parts, dim=0, out=staging)
        return staging.to(device, non_blocking=True)

    def _prepare(self, tensor: Any) -> Any:
        """Cast a floating input to ``dtype`` and a 4-D one to channels-last, as asked."""
        if self.dtype is not None and tensor.is_floating_point() and tensor.dtype != self.dtype:
            tensor = tensor.to(self.dtype)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=self.torch.channels_last)
        return tensor


_CAPTURING = threading.Lock()  # NOTE [CUDA graphs]: one capture at a time in the process


class _Graphs:
    """An instance's CUDA graphs of its model, one per padded batch size (NOTE [CUDA graphs])."""

    def __init__(self, torch: Any, stream: Any, largest: int) -> None:
        self.torch = torch
        self.stream = stream
        self.sizes = sorted({min(1 << i, largest) for i in range(largest.bit_length() + 1)})
        self.captured: dict[tuple[Any, ...], tuple[Any, list[Any], list[Any], bool]] = {}
        self.pool: Any = None

    def run(self, model: Any, inputs: list[Any]) -> Any:
        """``model(*inputs)`` by replaying its graph for this batch's padded size (captured now
        if new); eagerly when the batch has more rows than the largest size."""
        rows = inputs[0].shape[0]
        size = next((size for size in self.sizes if size >= rows), None)
        if size is None or any(x.shape[0] != rows for x in inputs):
            return model(*inputs)
        key = (size, *((tuple(x.shape[1:]), x.dtype, _channels_last(self.torch, x)) for x in inputs))
        if key not in self.captured:
            self.captured[key] = self._capture(model, inputs, size)
        graph, static_inputs, static_outputs, several = self.captured[key]
        for static, x in zip(static_inputs, inputs, strict=True):
            static[:rows].copy_(x)
        graph.replay()
        outputs = [output[:rows].clone() for output in static_outputs]
        return outputs if several else outputs[0]

    def _capture(self, model: Any, inputs: list[Any], size: int) -> tuple[Any, list[Any], list[Any], bool]:
        torch = self.torch
        static_inputs = []
        for x in inputs:
            static = torch.zeros((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            if _channels_last(torch, x):
                static = static.contiguous(memory_format=torch.channels_last)
            static_inputs.append(static)
        for _ in range(2):  # warm-up: libraries initialise outside the capture
            model(*static_inputs)
        graph = torch.cuda.CUDAGraph()
        # Not ``torch.cuda.graph``: it synchronises the whole device first, which fails (and breaks
        # the capture) while another instance captures; one capture at a time, on this stream.
        with _CAPTURING, torch.cuda.stream(self.stream):
            self.stream.synchronize()
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                outputs = model(*static_inputs)
            finally:
                graph.capture_end()
        self.pool = graph.pool()
        several = isinstance(outputs, (list, tuple))
        return graph, static_inputs, list(outputs) if several else [outputs], several


def _channels_last(torch: Any, x: Any) -> bool:
    return bool(x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))


def _batch_shape(parts: list[Any], torch: Any) -> tuple[tuple[int, ...], Any]:
    """The shape and dtype of ``parts`` concatenated along dimension 0 (dtypes promote as in
    ``torch.cat``); a ValueError when their rows differ in shape."""
    inner = tuple(parts[0].shape[1:])
    dtype = parts[0].dtype
    for part in parts[1:]:
        if tuple(part.shape[1:]) != inner:
            raise ValueError(
                f"items of one batch differ in shape: rows of {list(inner)} and rows of {list(part.shape[1:])}"
            )
        dtype = torch.promote_types(dtype, part.dtype)
    return (sum(part.shape[0] for part in parts), *inner), dtype


class TorchScript(_ModelBackend):
    """A TorchScript file run with batching; see the module docstring."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.load_model("TorchScript", self._load)

    def _load(self, path: str) -> Any:
        with warnings.catch_warnings():  # deprecated for new models; old files are why this exists
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            return self.torch.jit.load(path, map_location=self.device)


class TorchExport(_ModelBackend):
    """A ``torch.export`` program file run with batching (export it with a dynamic batch dim)."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.load_model("exported program", self._load, evaluate=False)

    def _load(self, path: str) -> Any:
        with warnings.catch_warnings():  # PyTorch 2.11 warns of its own read-only buffers as it loads
            warnings.filterwarnings("ignore", message=".*given buffer is not writable.*", category=UserWarning)
            return self.torch.export.load(path).module()


class TorchModule(_ModelBackend):
    """An ``nn.Module`` from a factory, run with batching; see the module docstring."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        target = get_str(params, "module", node=options.node)
        module_name, sep, attr = target.partition(":")
        if not sep:
            raise ConfigError(f"expected 'package.module:factory', got {target!r}", node=options.node, key="module")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {target!r}: {exc}", node=options.node, key="module") from exc
        model = factory()
        weights = params.get("weights")
        if weights is not None:
            model.load_state_dict(self.torch.load(str(weights), map_location="cpu", weights_only=True))
        self.model = self.place(model)


class Torch(_Placed):
    """``Torch[X]``/``SyncTensor[X]``: run ``X`` on this instance's CUDA stream, then synchronise."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        if len(options.children) != 1:
            raise ConfigError("Torch[X] wraps exactly one backend", node=options.node)
        self.child = options.children[0].backend

    def min(self) -> int:
        return self.child.min()

    def max(self) -> int:
        return self.child.max()

    def forward(self, items: list[Item]) -> None:
        with self.on_stream():
            self.child.forward(items)
            self.synchronise()

    def close(self) -> None:
        self.child.close()
