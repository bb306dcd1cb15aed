"""The neutral tensor that both transports decode to and encode from, and value coercion.

A :class:`Tensor` is a name, a protocol datatype and a numpy array whose shape is the tensor's
shape. HTTP/JSON, HTTP binary and gRPC (raw or typed contents) all decode to it, so validation,
batch splitting and output stacking are written once.

:func:`coerce` turns values given as Python objects (JSON lists, gRPC typed contents, what a
backend returned) into an array of a datatype, refusing lossy conversions rather than letting
numpy wrap or truncate silently: ``300`` is not a UINT8 and ``2.5`` is not an INT32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datatypes import numpy_dtype

__all__ = ["Tensor", "coerce", "element_count", "make_tensor", "shape_text"]


@dataclass(frozen=True, init=False)
class Tensor:
    """One named tensor of a request or response.

    Attributes:
        name: the tensor's name in the protocol.
        datatype: its protocol datatype (``"FP32"``, ``"BYTES"``...).
        data: its elements: an array of :func:`~pipeserve.oip.datatypes.numpy_dtype` of the
            datatype; for BYTES an object array whose every element is ``bytes``.

    Raises:
        ValueError: ``data`` is not a numpy array of the datatype's dtype (a programming error).
    """

    name: str
    datatype: str
    data: NDArray[Any]

    # NOTE [frozen messages]: the frozen dataclasses of this package set their fields through
    # the instance __dict__, which is what dataclass's own __init__ achieves with one
    # object.__setattr__ call per field, at a third of the cost; they stay frozen to everyone else.
    def __init__(self, name: str, datatype: str, data: NDArray[Any]) -> None:
        expected = numpy_dtype(datatype)
        if not isinstance(data, np.ndarray) or data.dtype != expected:
            got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"tensor {name!r}: {datatype} data must be a numpy {expected} array, got {got}")
        fields = self.__dict__
        fields["name"] = name
        fields["datatype"] = datatype
        fields["data"] = data

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape (that of :attr:`data`)."""
        shape: tuple[int, ...] = self.data.shape
        return shape


_new = object.__new__


def make_tensor(name: str, datatype: str, data: NDArray[Any]) -> Tensor:
    """A :class:`Tensor` whose ``data`` the caller guarantees to be of ``datatype``'s dtype (unchecked)."""
    tensor: Tensor = _new(Tensor)
    fields = tensor.__dict__
    fields["name"] = name
    fields["datatype"] = datatype
    fields["data"] = data
    return tensor


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """A shape as the protocol writes it, for messages: ``(2, 3)`` -> ``"[2, 3]"``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    """The number of elements of a tensor of ``shape`` (1 for a scalar)."""
    return math.prod(shape)


_KIND_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings", "S": "bytes"}


def coerce(values: Any, datatype: str) -> NDArray[Any]:
    """Convert ``values`` (nested lists, scalars, arrays) to an array of ``datatype``, keeping their shape.

    BOOL takes booleans only; integer types take integers within range; floating types take
    integers or floats; BYTES takes ``bytes`` (kept), ``str`` (UTF-8 encoded) or ``numpy.bytes_``.

    Returns:
        An array of the datatype's numpy dtype (an object array of ``bytes`` for BYTES); it may
        be ``values`` itself when that already is such an array.

    Raises:
        ValueError: a value of the wrong kind or out of range; the message says which.
        InputError: an unknown datatype, or BF16 without ``ml_dtypes``.
    """
    dtype = numpy_dtype(datatype)  # raises for an unknown datatype, and for BF16 without ml_dtypes
    if datatype == "BYTES":
        return _coerce_bytes(values)
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{datatype} values must form a regular array: {error}") from None
    if array.size == 0:
        return np.zeros(array.shape, dtype=dtype)
    if array.dtype == dtype:
        return array
    kind = array.dtype.kind
    if kind == "V" and array.dtype.name == "bfloat16":
        kind = "f"  # ml_dtypes' bfloat16 is kind "V" to numpy; it is a float all the same
    if kind in "fO" and dtype.kind in "iu" and not isinstance(values, np.ndarray):
        # numpy reads Python ints beyond int64 ([0, 2**64 - 1]) as floats, losing digits, or as
        # objects; keep them exact so that UINT64 gets its full range and the rest a range error.
        exact = np.asarray(values, dtype=object)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in exact.flat):
            array, kind = exact, "i"
    if datatype == "BOOL":
        allowed, need = "b", "booleans"
    elif dtype.kind in "iu":
        allowed, need = "iu", "integers"
    else:  # FP16/32/64 and BF16
        allowed, need = "iuf", "numbers"
    if kind not in allowed:
        raise ValueError(
            f"{datatype} needs {need}, got {_KIND_WORDS.get(kind, 'values of mixed or non-numeric types')}"
        )
    if dtype.kind in "iu":
        _check_range(array, datatype, dtype)
    return array.astype(dtype)


def _check_range(array: NDArray[Any], datatype: str, dtype: np.dtype[Any]) -> None:
    # numpy would wrap 300 to 44 for UINT8 without a word; refuse instead.
    info = np.iinfo(dtype)
    low, high = array.min(), array.max()
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise ValueError(f"value {bad} is out of range for {datatype} [{info.min}, {info.max}]")


def _coerce_bytes(values: Any) -> NDArray[Any]:
    source = np.array(values, dtype=object)
    out = np.empty(source.shape, dtype=object)
    flat = out.reshape(-1)  # a view: writing it fills out
    for index, value in enumerate(source.flat):
        if isinstance(value, bytes):
            flat[index] = bytes(value)  # numpy.bytes_ is a bytes subclass: store plain bytes
        elif isinstance(value, str):
            flat[index] = value.encode("utf-8")
        else:
            raise ValueError(f"BYTES needs bytes or strings, got {type(value).__name__} at element {index}")
    return out
