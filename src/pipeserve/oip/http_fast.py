"""The fast path of HTTP request decoding: the inputs of a usual, valid body in one pass.

See NOTE [fast path] in :mod:`pipeserve.oip.plan`: :func:`inputs_from_json_fast` decodes and
checks the ``inputs`` of a request against the declared signature at once and returns ``None``
at the first thing it does not expect, so that :func:`~pipeserve.oip.http_tensors.tensors_from_json`
and :func:`~pipeserve.oip.validate.check_request` decode the request and word any fault.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .http_tensors import SHARED_MEMORY
from .plan import Plan, SpecPlan
from .raw import decode_raw
from .tensor import Tensor, element_count, make_tensor
from .validate import shape_matches

__all__ = ["SCALARS", "inputs_from_json_fast"]

SCALARS = (bool, int, float, str)
"""The types that a parameter may have (JSON gives exactly these, never subclasses)."""

_FEW = 64  # JSON values checked one by one in Python; numpy checks longer lists faster
_EXACT = 2**53  # integers up to this size are exact in a double


def inputs_from_json_fast(raw: Any, binary: memoryview, plan: Plan) -> tuple[Tensor, ...] | None:
    """The inputs of a well-formed and valid request, decoded and checked in one pass, in declared order.

    The fast path of NOTE [fast path]: each declared input exactly once with its datatype and
    shape, JSON ``data`` (of one regular nesting or flat) or binary data, one batch size of at
    least 1, all binary data used. Returns ``None`` at anything else (a fault, BF16, BYTES in a
    nested list...).
    """
    specs = plan.specs
    if type(raw) is not list or len(raw) != len(specs) or not specs:
        return None
    by_name = plan.by_name
    ordered: list[Tensor | None] = [None] * len(specs)
    offset = 0
    batch = 0
    for entry in raw:
        if type(entry) is not dict:
            return None
        name = entry.get("name")
        facts = by_name.get(name) if type(name) is str and name else None
        if facts is None or ordered[facts.index] is not None or entry.get("datatype") != facts.datatype:
            return None
        dims = _fast_dims(entry.get("shape"), facts)
        if dims is None or facts.dtype is None:
            return None
        size = dims[0]
        if batch != size:
            if batch:
                return None
            batch = size
        count = size * facts.count if facts.count is not None else element_count(dims)
        if facts.json and count != size:
            return None  # a JSON input holds one element per item
        parameters = entry.get("parameters")
        length = None if parameters is None else _fast_binary_size(parameters)
        if length is None:
            data = entry.get("data")
            array = _fast_json_data(data, facts, dims, count) if type(data) is list else None
        else:
            if length < 0 or offset + length > len(binary) or "data" in entry:
                return None
            array = _fast_binary_data(binary[offset : offset + length], facts, dims, count)
            offset += length
        if array is None:
            return None
        ordered[facts.index] = make_tensor(facts.name, facts.datatype, array)
    if offset != len(binary):
        return None
    return tuple(ordered)  # type: ignore[arg-type]  # every slot is filled: one entry per spec, none twice


def _fast_dims(shape: Any, facts: SpecPlan) -> tuple[int, ...] | None:
    """``shape`` as a tuple when it is a batch of at least 1 followed by the declared per-item shape."""
    if type(shape) is not list or len(shape) != len(facts.shape) + 1:
        return None
    for dim in shape:
        if type(dim) is not int or dim < 0:
            return None
    dims = tuple(shape)
    if not dims[0]:
        return None
    if dims[1:] != facts.fixed and not shape_matches(dims[1:], facts.shape):
        return None
    return dims


def _fast_binary_size(parameters: Any) -> int | None:
    """The ``binary_data_size`` of well-formed tensor parameters; ``None`` when absent; -1 for a fault."""
    if type(parameters) is not dict:
        return -1
    for key, value in parameters.items():
        if type(value) not in SCALARS or key in SHARED_MEMORY:
            return -1
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    return size if type(size) is int else -1


def _fast_json_data(data: list[Any], facts: SpecPlan, dims: tuple[int, ...], count: int) -> NDArray[Any] | None:
    if not count:
        return None
    if facts.floats and len(data) == count <= _FEW:
        # A few plain numbers convert in one numpy call: floats (which np.asarray would read as
        # float64) and ints that a double holds exactly (int64 to numpy), so either way each
        # value is rounded once, to the same float.
        for value in data:
            kind = type(value)
            if kind is not float and (kind is not int or not -_EXACT <= value <= _EXACT):
                break
        else:
            return np.array(data, dtype=facts.dtype).reshape(dims)
    if facts.allowed:  # numbers
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None
        if array.dtype.kind not in facts.allowed or array.size != count:
            return None
        dtype = facts.dtype
        if array.dtype != dtype:
            bounds = facts.bounds
            if bounds is not None:  # an integer type narrower than the values'
                low, high = (min(data), max(data)) if array.ndim == 1 and count <= 64 else (array.min(), array.max())
                if low < bounds[0] or high > bounds[1]:
                    return None
            array = array.astype(dtype)
        return array if array.shape == dims else array.reshape(dims)
    if facts.datatype != "BYTES" or len(data) != count:
        return None
    try:
        encoded = [value.encode("utf-8") for value in data]  # JSON strings; anything else has no encode
    except (AttributeError, UnicodeEncodeError):
        return None
    array = np.empty(count, dtype=object)
    array[:] = encoded
    return array.reshape(dims)


def _fast_binary_data(chunk: memoryview, facts: SpecPlan, dims: tuple[int, ...], count: int) -> NDArray[Any] | None:
    if facts.itemsize is None:  # BYTES
        try:
            return decode_raw("BYTES", dims, chunk)
        except ValueError:
            return None
    if not count or len(chunk) != count * facts.itemsize:
        return None
    array: NDArray[Any] = np.empty(dims, dtype=facts.dtype)  # a fresh, writable copy of the chunk
    try:
        array.data.cast("B")[:] = chunk
    except (ValueError, TypeError):  # a format memoryview cannot cast (a big-endian host's "<f4")
        return None
    return array
