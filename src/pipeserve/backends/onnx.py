"""ONNX Runtime inference (``OnnxRuntime``, alias ``Onnx``). Needs ``pipeserve[onnx]``.

Keys:

* ``model``: the ``.onnx`` file (one per bucket group with ``&``: ``"b1.onnx&b4.onnx"``).
* ``max``/``min``: the batch range; a model with a static batch dimension ``B`` accepts up to
  ``B`` items (fewer are padded with copies of the last row, and the padding is dropped).
* ``providers``: comma-separated execution providers; default TensorRT then CUDA when
  onnxruntime has them (each falls back to the next for what it cannot run), else CPU.
* ``intra_op_threads``: unset (the default), a CPU session is *elastic* (NOTE [elastic budget] in
  :mod:`pipeserve.budget`): the instance holds one session with its fair share of the CPU budget
  (the cores divided among all computing instances) and one with all the budget's cores, and
  each batch runs on the widest the budget grants, so a lone request uses the cores the others
  leave idle and nothing is oversubscribed under load (``elastic = false``: the fair share only;
  each session holds its own copy of the weights). Set, that many threads, always.
  ``spin`` (default false) allows onnxruntime's busy-waiting threads, which help a lone session
  but hurt several.
* ``mean``/``std``: per-channel normalisation of the first input before the model (axis 1 for
  4-D inputs, else the last axis).
* ``pad_value``: used when items of one batch differ in shape (variable widths): each is padded at
  the end of every dimension to the largest in the batch, or to its ``_bucket_edge`` along the
  node's ``bucket_key = "shape[i]"``.

Each item's ``data`` is an array (one model input) or a list of arrays (several, in the model's
order); an array may carry its own batch dimension (as many rows as it has) or not (one row).
``result`` is an array, or a list in the model's output order, with the item's rows; an item
without a batch dimension gets its row without one. Shapes and dtypes are checked against the
model with messages that say what was expected.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..backend import Backend, Options, require
from ..config import get_bool, get_float, get_int, get_list, get_str
from ..errors import ConfigError

__all__ = ["OnnxRuntime"]

_TRIES = 3  # calls on each thread count before comparing them (NOTE [elastic budget])
_PAYS = 1.25  # how much faster per element a wider session must be to be used

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRuntime(Backend):
    """One onnxruntime session per instance; see the module docstring."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        np: Any = require("numpy", "onnx")
        ort: Any = require("onnxruntime", "onnx")
        self.np = np
        node = options.node
        self.model = get_str(params, "model", node=node)
        available = ort.get_available_providers()
        preferred = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        providers = get_list(params, "providers", node=node) or [p for p in preferred if p in available]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ConfigError(
                f"providers {unknown} are not available; onnxruntime has {available}", node=node, key="providers"
            )
        self.providers = providers
        self.spin = "1" if get_bool(params, "spin", False, node=node) else "0"
        # NOTE [elastic budget]: without an explicit thread count, a CPU session is elastic: one
        # session per thread count this instance is granted (its fair share, and all the cores
        # when the others leave them idle), all built now but an unusual grant's.
        fixed = "intra_op_threads" in params
        threads = get_int(params, "intra_op_threads", options.cpu_threads, node=node, minimum=1)
        self.elastic = (
            not fixed and providers == ["CPUExecutionProvider"] and get_bool(params, "elastic", True, node=node)
        )
        self.sessions: dict[int, Any] = {threads: self._open(threads)}
        self.threads = threads  # those of the session in use
        # Seconds per input element of each thread count, learnt from the calls it ran
        # (an exponential average, and how many calls it rests on): widening must pay.
        self.costs: dict[int, list[float]] = {}
        self.most = threads
        if self.elastic and options.cpu_cores > threads:
            self.most = options.cpu_cores
            self.sessions[self.most] = self._open(self.most)
        self.session = self.sessions[threads]
        self.inputs = self.session.get_inputs()
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.dtypes = [np.dtype(_DTYPES.get(i.type, "float32")) for i in self.inputs]
        first = self.inputs[0].shape[0] if self.inputs[0].shape else None
        self.static_batch = first if isinstance(first, int) and first > 0 else None
        self.pad_value = get_float(params, "pad_value", 0.0, node=node)
        self.mean = self._channel_vector(params, "mean")
        self.std = self._channel_vector(params, "std")
        key = str(params.get("bucket_key", ""))
        self.bucket_dim = int(key[6:-1]) if key.startswith("shape[") and key.endswith("]") else None

    def _open(self, threads: int) -> Any:
        """An inference session with ``threads`` intra-op threads."""
        ort = require("onnxruntime", "onnx")
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.add_session_config_entry("session.intra_op.allow_spinning", self.spin)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", self.spin)
        try:
            return ort.InferenceSession(self.model, session_options, providers=self.providers)
        except Exception as exc:
            raise ConfigError(
                f"cannot load ONNX model {self.model!r}: {exc}", node=self.options.node, key="model"
            ) from exc

    def max_threads(self) -> int:
        return self.most

    def use_threads(self, granted: int) -> int:
        """The session with the most threads within ``granted``, as long as it pays: a wider
        session is used only once its calls ran at least 1.25x faster per input element than
        the narrower one's (each is tried a few times first; a model whose operators do not
        scale, such as the PP-OCR recogniser, then keeps one thread and leaves the other cores
        to other stages). A session is opened for a grant below every session's count (a later
        pipe lowered the fair share)."""
        if not self.elastic:
            return self.most
        fitting = [threads for threads in self.sessions if threads <= granted]
        if not fitting:
            self.sessions[granted] = self._open(granted)
            fitting = [granted]
        threads = max(fitting)
        narrower = [t for t in fitting if t < threads]
        if narrower:
            narrow = max(narrower)
            wide_cost, wide_calls = self.costs.get(threads, (0.0, 0))
            narrow_cost, narrow_calls = self.costs.get(narrow, (0.0, 0))
            if wide_calls >= _TRIES and (narrow_calls < _TRIES or wide_cost * _PAYS > narrow_cost):
                threads = narrow
        self.threads = threads
        self.session = self.sessions[threads]
        return threads

    def _learn(self, elements: int, seconds: float) -> None:
        if not self.elastic or elements <= 0:
            return
        cost = seconds / elements
        entry = self.costs.get(self.threads)
        if entry is None:
            self.costs[self.threads] = [cost, 1]
        else:
            entry[0] += (cost - entry[0]) * (0.5 if entry[1] < _TRIES else 0.1)
            entry[1] += 1

    def _channel_vector(self, params: Mapping[str, Any], key: str) -> Any:
        values = get_list(params, key, node=self.options.node)
        if not values:
            return None
        try:
            return self.np.asarray([float(v) for v in values], dtype=self.dtypes[0])
        except ValueError:
            raise ConfigError(f"expected numbers, got {values}", node=self.options.node, key=key) from None

    def max(self) -> int:
        if self.static_batch is not None:
            return min(self.static_batch, get_int(self.params, "max", self.static_batch, node=self.options.node))
        return super().max()

    def min(self) -> int:
        return min(super().min(), self.max())

    # ------------------------------------------------------------------ forward
    def forward(self, items: list[dict[str, Any]]) -> None:
        per_item = [self._arrays(item) for item in items]
        rows = [arrays[0].shape[0] for arrays, _ in per_item]
        feeds = []
        for index, spec in enumerate(self.inputs):
            parts = [arrays[index] for arrays, _ in per_item]
            edges = [item.get("_bucket_edge") for item in items]
            feeds.append(self._stack(parts, spec, edges))
        if self.mean is not None or self.std is not None:
            feeds[0] = self._normalise(feeds[0])
        outputs = self._run(feeds, sum(rows))
        start = 0
        for item, count, (_, batched) in zip(items, rows, per_item, strict=True):
            sliced = [out[start : start + count] for out in outputs]
            if not batched:
                sliced = [out[0] for out in sliced]
            item["result"] = sliced[0] if len(sliced) == 1 else sliced
            start += count

    def _arrays(self, item: dict[str, Any]) -> tuple[list[Any], bool]:
        data = item["data"]
        values = list(data) if isinstance(data, (list, tuple)) else [data]
        if len(values) != len(self.inputs):
            raise ValueError(
                f"the model takes {len(self.inputs)} inputs {[i.name for i in self.inputs]}, got {len(values)}"
            )
        arrays = []
        batched = None
        for value, spec, dtype in zip(values, self.inputs, self.dtypes, strict=True):
            array = self.np.asarray(value)
            if array.dtype != dtype:
                raise ValueError(
                    f"input {spec.name!r} expects {dtype}, got {array.dtype} with shape {list(array.shape)}"
                )
            has_batch = array.ndim == len(spec.shape)
            if not has_batch and array.ndim != len(spec.shape) - 1:
                raise ValueError(
                    f"input {spec.name!r} expects shape {_show(spec.shape)} (or one row of it), got {list(array.shape)}"
                )
            if batched is not None and has_batch != batched:
                raise ValueError("either every input of an item has a batch dimension or none has")
            batched = has_batch
            arrays.append(array if has_batch else array[None])
        return arrays, bool(batched)

    def _stack(self, parts: Sequence[Any], spec: Any, edges: Sequence[Any]) -> Any:
        np = self.np
        target = [max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim)]
        if self.bucket_dim is not None:
            finite = [e for e in edges if e is not None and e != float("inf")]
            if finite and 0 <= self.bucket_dim < len(target):
                target[self.bucket_dim] = max(target[self.bucket_dim], int(max(finite)))
        padded = []
        for part in parts:
            if list(part.shape[1:]) != target:
                widths = [(0, 0)] + [(0, t - s) for s, t in zip(part.shape[1:], target, strict=True)]
                part = np.pad(part, widths, constant_values=self.pad_value)
            padded.append(part)
        batch = padded[0] if len(padded) == 1 else np.concatenate(padded, axis=0)
        for axis, (want, got) in enumerate(zip(spec.shape[1:], batch.shape[1:], strict=True), start=1):
            if isinstance(want, int) and want > 0 and want != got:
                rows = list(batch.shape[1:])
                raise ValueError(
                    f"input {spec.name!r} expects shape {_show(spec.shape)}, got rows of {rows} (axis {axis})"
                )
        return batch

    def _normalise(self, x: Any) -> Any:
        shape = [1] * x.ndim
        axis = 1 if x.ndim == 4 else x.ndim - 1
        shape[axis] = -1
        if self.mean is not None:
            x = x - self.mean.reshape(shape)
        if self.std is not None:
            x = x / self.std.reshape(shape)
        return x.astype(self.dtypes[0], copy=False)

    def _run(self, feeds: list[Any], rows: int) -> list[Any]:
        start = time.perf_counter()
        outputs = self._run_session(feeds, rows)
        self._learn(sum(int(f.size) for f in feeds), time.perf_counter() - start)
        return outputs

    def _run_session(self, feeds: list[Any], rows: int) -> list[Any]:
        names = [spec.name for spec in self.inputs]
        size = self.static_batch
        if size is None or rows == size:
            return list(self.session.run(self.output_names, dict(zip(names, feeds, strict=True))))
        chunks = []
        for start in range(0, rows, size):
            part = [f[start : start + size] for f in feeds]
            short = size - part[0].shape[0]
            if short:  # pad a static batch with copies of the last row; dropped below
                part = [self.np.concatenate([p, self.np.repeat(p[-1:], short, axis=0)]) for p in part]
            out = self.session.run(self.output_names, dict(zip(names, part, strict=True)))
            chunks.append([o[: size - short] for o in out])
        return [self.np.concatenate([c[i] for c in chunks]) for i in range(len(self.output_names))]


def _show(shape: Sequence[Any]) -> str:
    return (
        "[" + ", ".join(str(d) if isinstance(d, int) else "N" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"
    )
