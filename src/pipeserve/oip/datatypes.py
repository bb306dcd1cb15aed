"""The Open Inference Protocol's element types: numpy dtypes, sizes and Triton's config names.

One table, :data:`DATATYPES`, says for each protocol datatype (``"FP32"``...) which numpy dtype
holds its elements, how many bytes one element takes on the wire, what Triton's model
configuration calls it (``"TYPE_FP32"``) and which typed ``contents`` field of a gRPC tensor
carries it. Everything else in :mod:`pipeserve.oip` looks types up here.

Two types are special:

- ``BYTES`` elements are variable-length byte strings. In memory they are numpy object arrays
  whose elements are ``bytes``; on the wire each element is a 4-byte little-endian length
  followed by the bytes. Their element size is ``None``.
- ``BF16`` has no numpy type of its own. It decodes to ``ml_dtypes.bfloat16`` (installed with
  ``tritonclient``, which uses the same type) when that package is importable; without it a
  BF16 tensor may still be declared and described, but decoding or encoding its data raises
  :class:`~pipeserve.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import InputError

__all__ = [
    "DATATYPES",
    "DataType",
    "config_name",
    "datatype_from_config",
    "datatype_of",
    "element_size",
    "lookup",
    "numpy_dtype",
]


@dataclass(frozen=True)
class DataType:
    """One row of the type table.

    Attributes:
        name: the protocol's name, e.g. ``"FP32"``.
        numpy: the little-endian numpy dtype string (``"<f4"``), ``"O"`` for BYTES, ``""`` for
            BF16 (found at run time, see the module docstring).
        size: bytes per element on the wire; ``None`` for BYTES.
        config: Triton's model-configuration name, e.g. ``"TYPE_FP32"``.
        contents: the ``InferTensorContents`` field that carries it in gRPC, ``""`` when none
            does (FP16 and BF16 travel only as raw bytes).
    """

    name: str
    numpy: str
    size: int | None
    config: str
    contents: str


# The wire is little-endian whatever the host is, hence the explicit "<".
DATATYPES: dict[str, DataType] = {
    row.name: row
    for row in (
        DataType("BOOL", "?", 1, "TYPE_BOOL", "bool_contents"),
        DataType("UINT8", "u1", 1, "TYPE_UINT8", "uint_contents"),
        DataType("UINT16", "<u2", 2, "TYPE_UINT16", "uint_contents"),
        DataType("UINT32", "<u4", 4, "TYPE_UINT32", "uint_contents"),
        DataType("UINT64", "<u8", 8, "TYPE_UINT64", "uint64_contents"),
        DataType("INT8", "i1", 1, "TYPE_INT8", "int_contents"),
        DataType("INT16", "<i2", 2, "TYPE_INT16", "int_contents"),
        DataType("INT32", "<i4", 4, "TYPE_INT32", "int_contents"),
        DataType("INT64", "<i8", 8, "TYPE_INT64", "int64_contents"),
        DataType("FP16", "<f2", 2, "TYPE_FP16", ""),
        DataType("FP32", "<f4", 4, "TYPE_FP32", "fp32_contents"),
        DataType("FP64", "<f8", 8, "TYPE_FP64", "fp64_contents"),
        DataType("BF16", "", 2, "TYPE_BF16", ""),
        # Triton's configuration calls BYTES "TYPE_STRING".
        DataType("BYTES", "O", None, "TYPE_STRING", "bytes_contents"),
    )
}

_BY_CONFIG = {row.config: row.name for row in DATATYPES.values()}

# Every dtype but BF16's, made once (BF16's comes from an optional package, looked up each time).
_NUMPY = {row.name: np.dtype(row.numpy) for row in DATATYPES.values() if row.numpy}


def lookup(datatype: str) -> DataType:
    """The table row of ``datatype``.

    Raises:
        InputError: ``datatype`` is not one of the protocol's names.
    """
    row = DATATYPES.get(datatype)
    if row is None:
        raise InputError(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
    return row


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds elements of ``datatype`` (object for BYTES).

    Raises:
        InputError: an unknown datatype, or BF16 while ``ml_dtypes`` is not installed.
    """
    dtype = _NUMPY.get(datatype)
    if dtype is not None:
        return dtype
    lookup(datatype)  # unknown names raise here; the only known one left is BF16
    return _bfloat16()


def element_size(datatype: str) -> int | None:
    """Bytes per element on the wire, ``None`` for BYTES (whose elements vary in length).

    Raises:
        InputError: an unknown datatype.
    """
    return lookup(datatype).size


def config_name(datatype: str) -> str:
    """Triton's model-configuration name of ``datatype``: ``"FP32"`` -> ``"TYPE_FP32"``.

    Raises:
        InputError: an unknown datatype.
    """
    return lookup(datatype).config


def datatype_from_config(name: str) -> str:
    """The protocol datatype of a Triton configuration name: ``"TYPE_STRING"`` -> ``"BYTES"``.

    Raises:
        InputError: a name that is not in the table.
    """
    datatype = _BY_CONFIG.get(name)
    if datatype is None:
        raise InputError(f"unknown configuration datatype {name!r}; expected one of {', '.join(_BY_CONFIG)}")
    return datatype


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The protocol datatype whose elements ``dtype`` holds (object and ``bytes_`` -> BYTES).

    Raises:
        InputError: a dtype the protocol has no type for (complex, datetime, unicode...).
    """
    if dtype.kind in "OS":
        return "BYTES"
    for row in DATATYPES.values():
        if row.numpy not in ("", "O") and np.dtype(row.numpy) == dtype:
            return row.name
    if dtype.name == "bfloat16":
        return "BF16"
    raise InputError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def _bfloat16() -> np.dtype[Any]:
    # Imported lazily: ml_dtypes comes with tritonclient but is not needed for other types.
    try:
        import ml_dtypes
    except ImportError:
        raise InputError(
            "BF16 tensors need a numpy bfloat16 type, which numpy lacks: install ml_dtypes "
            "(it comes with pipeserve[serve])"
        ) from None
    dtype: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return dtype
