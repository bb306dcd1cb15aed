"""Tensors in an HTTP body: JSON entries ``{name, datatype, shape, data | parameters.binary_data_size}``.

Used for inputs (requests) and outputs (responses) alike; :mod:`pipeserve.oip.http_codec`
puts them in bodies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import InputError
from .datatypes import DATATYPES, numpy_dtype
from .messages import Parameter
from .raw import decode_raw, encode_raw, raw_size
from .tensor import Tensor, coerce, element_count, shape_text

__all__ = ["SHARED_MEMORY", "json_text", "parameters_from_json", "tensors_from_json", "tensors_to_json"]

SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
"""Tensor parameters that ask for Triton's shared memory, which pipeserve refuses rather than ignores."""


def parameters_from_json(raw: Any, where: str) -> dict[str, Parameter]:
    """The ``parameters`` object of a request, tensor or response; ``{}`` when absent.

    Raises:
        InputError: not an object, or a value that is not a boolean, number or string.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{where}: 'parameters' must be an object, got {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(value, (bool, int, float, str)):
            raise InputError(f"{where}: parameter {key!r} must be a boolean, number or string, got {value!r}")
    return dict(raw)


def tensors_from_json(raw: Any, binary: memoryview, kind: str) -> tuple[Tensor, ...]:
    """Decode the ``inputs`` (or ``outputs``) list of a body, taking binary parts from ``binary`` in order.

    Args:
        raw: the list from the JSON document.
        binary: the bytes after the JSON part.
        kind: ``"input"`` or ``"output"``, for messages.

    Raises:
        InputError: a malformed entry, data that does not fit its datatype and shape, or binary
            sizes that do not add up to the binary data present.
    """
    if not isinstance(raw, list):
        raise InputError(f"'{kind}s' must be a list of tensors, got {type(raw).__name__}")
    tensors = []
    offset = 0
    for index, entry in enumerate(raw):
        name, datatype, shape = _header(entry, kind, index)
        where = f"{kind} {name!r}"
        parameters = parameters_from_json(entry.get("parameters"), where)
        if any(key in parameters for key in SHARED_MEMORY):
            raise InputError(f"{where}: shared memory is not supported; send the data in the body")
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise InputError(f"{where}: no 'data' and no 'binary_data_size' parameter")
            data = _from_json_data(entry["data"], datatype, shape, where)
        else:
            if "data" in entry:
                raise InputError(f"{where}: has both 'data' and a 'binary_data_size' parameter")
            data = _from_binary(binary, offset, size, datatype, shape, where)
            offset += int(size)
        tensors.append(Tensor(name, datatype, data))
    if offset != len(binary):
        raise InputError(
            f"the body carries {len(binary)} bytes after the JSON header, but the {kind}s' "
            f"binary_data_size parameters add up to {offset}"
        )
    return tuple(tensors)


def tensors_to_json(
    tensors: Sequence[Tensor], binary: bool, forms: Mapping[str, bool | None] | None = None
) -> tuple[str, list[bytes]]:
    """The JSON list of entries for ``tensors`` (as text) and the binary parts to append after the JSON, in order.

    Args:
        tensors: the tensors to send.
        binary: whether to send a tensor in binary when ``forms`` does not say.
        forms: for some tensors' names, whether to send them in binary (``None``: as ``binary`` says).
            Whatever was asked, a BYTES tensor that is not valid UTF-8 goes in binary, and so
            does BF16, which JSON numbers would widen.

    Returns:
        The entries ``[{"name", "datatype", "shape", "data" | "parameters"}, ...]`` as
        :func:`json_text` writes them, and the binary parts.
    """
    entries = []
    chunks = []
    for tensor in tensors:
        data = tensor.data
        form = None if forms is None else forms.get(tensor.name)
        values = None if (binary if form is None else form) else _json_values(tensor.datatype, data)
        # The datatype is a name from the type table (a Tensor checks it) and needs no escaping.
        head = '{"name":' + json_text(tensor.name) + ',"datatype":"' + tensor.datatype + '","shape":['
        head += _shape_text(data.shape)
        if values is None:
            chunk = encode_raw(tensor.datatype, data)
            entries.append(head + '],"parameters":{"binary_data_size":' + str(len(chunk)) + "}}")
            chunks.append(chunk)
        else:
            entries.append(head + '],"data":' + json_text(values) + "}")
    return "[" + ",".join(entries) + "]", chunks


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_MAKE_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
# The C encoder that json.dumps(value, separators=(",", ":")) makes on every call, made once,
# without the circular-reference check (markers=None): the codec's values do not refer to themselves.
_C_ENCODE = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
)
_ESCAPE = json.encoder.encode_basestring_ascii
_SHAPES: dict[tuple[int, ...], str] = {}


def _shape_text(shape: tuple[int, ...]) -> str:
    """The dimensions of ``shape`` as JSON writes them inside its list: ``(2, 3)`` -> ``"2,3"``."""
    text = _SHAPES.get(shape)
    if text is None:
        if len(_SHAPES) >= 1024:
            _SHAPES.clear()
        text = _SHAPES[shape] = ",".join(map(str, shape))
    return text


def json_text(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``: compact and ASCII, as bodies are written."""
    if type(value) is str:
        return _ESCAPE(value)
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def _header(entry: Any, kind: str, index: int) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(entry, dict):
        raise InputError(f"{kind}s[{index}] must be an object, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{kind}s[{index}] needs a string 'name'")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InputError(f"{kind} {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise InputError(f"{kind} {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return name, datatype, tuple(shape)


def _from_binary(
    binary: memoryview, offset: int, size: Parameter, datatype: str, shape: tuple[int, ...], where: str
) -> Any:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputError(f"{where}: 'binary_data_size' must be a non-negative integer, got {size!r}")
    need = raw_size(datatype, shape)
    if need is not None and size != need:
        raise InputError(
            f"{where}: binary_data_size {size} but {need} bytes are needed for {datatype} {shape_text(shape)}"
        )
    if offset + size > len(binary):
        raise InputError(
            f"{where}: binary_data_size {size}, but only {len(binary) - offset} bytes of binary data remain"
        )
    try:
        return decode_raw(datatype, shape, binary[offset : offset + size])
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def _from_json_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> Any:
    if not isinstance(data, list):
        raise InputError(f"{where}: 'data' must be a list, got {type(data).__name__}")
    try:
        values = _flatten(data) if datatype == "BYTES" else _numeric(data, datatype)
        array = coerce(values, datatype)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None
    if array.size != element_count(shape):
        raise InputError(
            f"{where}: 'data' holds {array.size} values but {datatype} {shape_text(shape)} needs {element_count(shape)}"
        )
    return array.reshape(shape)


def _numeric(data: list[Any], datatype: str) -> Any:
    # numpy reads nested lists quickly. The nesting need not match the shape (row-major order is
    # all that counts), so a ragged nesting is flattened by hand instead; so are integers that
    # numpy widened to floats (beyond int64), for coerce to see them exact.
    try:
        array = np.asarray(data)
    except ValueError:
        return _flatten(data)
    if array.dtype.kind in "fO" and numpy_dtype(datatype).kind in "iu":
        return _flatten(data)
    return array.reshape(-1)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _json_values(datatype: str, data: NDArray[Any]) -> list[Any] | None:
    """The flat row-major JSON ``data`` of a tensor, or ``None`` when JSON cannot carry it."""
    if datatype == "BYTES":
        try:
            return [element.decode("utf-8") for element in data.reshape(-1)]
        except UnicodeDecodeError:
            return None
    if datatype == "BF16":
        return None
    values: list[Any] = data.ravel().tolist()
    return values
