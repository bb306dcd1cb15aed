"""PyTorch backends. Needs ``pipeserve[torch]``.

* ``TorchScript``: ``model`` is a TorchScript file (``torch.jit.save``). PyTorch 2.13 deprecates
  TorchScript; existing files still load (the deprecation warning is silenced here), new models
  are better exported with ``torch.export`` and served with ``TorchExport``.
* ``TorchExport``: ``model`` is a ``torch.export.save`` file (``.pt2``).
* ``TorchModule``: ``module = "package.module:factory"`` builds an ``nn.Module`` (the factory is
  called with no arguments); ``weights`` optionally names a ``state_dict`` file to load.
* ``Torch[X]`` (alias ``SyncTensor[X]``): runs ``X`` on this instance's CUDA stream and
  synchronises before results are handed on; on CPU it passes through.

Keys: ``device`` (``cpu`` by default, ``cuda:N``); ``torch_threads`` (unset, the default: on CPU
the instance is *elastic* (NOTE [elastic budget] in :mod:`pipeserve.budget`): each batch sets
PyTorch's threads to what the CPU budget grants, all the budget's cores when the other instances
leave them idle, the instance's fair share under load; PyTorch's intra-op pool is process-wide, so
the last grant applies to every PyTorch call from then on. Set, that many threads, always).
Each item's ``data`` is a tensor (or a numpy array) *with* a batch dimension, as TorchPipe
expects (``Mat2Tensor`` with ``layout = "NCHW"`` gives one), or a list of them for a model with
several inputs. The batch is
``torch.cat`` along dimension 0, run under ``torch.inference_mode()`` on the instance's own CUDA
stream when on a GPU, synchronised, and split back by each item's rows; several outputs give a
list per item. Results stay on the model's device.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ..backend import Backend, Options, require
from ..config import get_int, get_str
from ..errors import ConfigError

__all__ = ["Torch", "TorchExport", "TorchModule", "TorchScript"]

Item = dict[str, Any]


def _device(params: Mapping[str, Any], options: Options, torch: Any) -> Any:
    name = get_str(params, "device", "cpu", node=options.node)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU", node=options.node, key="device")
    return device


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

    def load_model(self, what: str, load: Callable[[str], Any]) -> None:
        """``self.model = load(path of the model key)``; a failure is a ConfigError naming it."""
        path = get_str(self.params, "model", node=self.options.node)
        try:
            self.model = load(path)
        except Exception as exc:
            raise ConfigError(f"cannot load {what} {path!r}: {exc}", node=self.options.node, key="model") from exc

    def forward(self, items: list[Item]) -> None:
        torch = self.torch
        per_item = [self._tensors(item) for item in items]
        rows = [tensors[0].shape[0] for tensors in per_item]
        with torch.inference_mode(), self.on_stream():
            inputs = [torch.cat([t[i] for t in per_item], dim=0) for i in range(len(per_item[0]))]
            outputs = self.model(*inputs)
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
            tensors.append(tensor.to(self.device, non_blocking=True))
        return tensors


class TorchScript(_ModelBackend):
    """A TorchScript file run with batching; see the module docstring."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.load_model("TorchScript", self._load)

    def _load(self, path: str) -> Any:
        with warnings.catch_warnings():  # deprecated for new models; old files are why this exists
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            return self.torch.jit.load(path, map_location=self.device).eval()


class TorchExport(_ModelBackend):
    """A ``torch.export`` program file run with batching (export it with a dynamic batch dim)."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.load_model("exported program", lambda path: self.torch.export.load(path).module().to(self.device))


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
        self.model = model.to(self.device).eval()


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
