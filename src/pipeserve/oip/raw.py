"""Tensors as raw little-endian bytes: the binary tensor data extension and gRPC raw contents.

Fixed-size types are their elements back to back in row-major order, little-endian. BYTES is,
for each element in row-major order, a 4-byte little-endian length then that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datatypes import element_size, numpy_dtype
from .tensor import element_count, shape_text

__all__ = ["decode_raw", "encode_raw", "raw_size"]

_LENGTH = struct.Struct("<I")


def raw_size(datatype: str, shape: tuple[int, ...] | list[int]) -> int | None:
    """Bytes that a tensor of ``datatype`` and ``shape`` takes raw; ``None`` for BYTES (it depends on the data)."""
    size = element_size(datatype)
    return None if size is None else size * element_count(shape)


def decode_raw(datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> NDArray[Any]:
    """The array of ``datatype`` and ``shape`` that ``buffer`` holds raw.

    The result owns its memory and is writable (a backend may work in place), so it does not
    keep the request body alive.

    Raises:
        ValueError: ``buffer`` has the wrong length for ``shape``, or BYTES elements overrun it or
            are too few or too many; the message says which.
    """
    if datatype == "BYTES":
        return _decode_bytes(shape, memoryview(buffer))
    need = raw_size(datatype, shape)
    if len(buffer) != need:
        raise ValueError(f"{len(buffer)} bytes but {need} bytes are needed for {datatype} {shape_text(shape)}")
    return np.frombuffer(buffer, dtype=numpy_dtype(datatype)).reshape(shape).copy()


def encode_raw(datatype: str, data: NDArray[Any]) -> bytes:
    """``data`` as raw bytes of ``datatype``, row-major and little-endian."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in data.reshape(-1):
            parts.append(_LENGTH.pack(len(element)))
            parts.append(element)
        return b"".join(parts)
    dtype = numpy_dtype(datatype)
    if data.dtype != dtype:
        data = data.astype(dtype)  # e.g. big-endian
    return data.tobytes()  # row-major, whatever the array's layout


def _decode_bytes(shape: tuple[int, ...], buffer: memoryview) -> NDArray[Any]:
    count = element_count(shape)
    elements = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(buffer):
            raise ValueError(
                f"BYTES {shape_text(shape)} needs {count} elements, but the data ends after {index} "
                "(each element is a 4-byte little-endian length, then its bytes)"
            )
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise ValueError(f"BYTES element {index} claims {length} bytes but only {len(buffer) - offset} remain")
        elements[index] = bytes(buffer[offset : offset + length])
        offset += length
    if offset != len(buffer):
        raise ValueError(
            f"BYTES {shape_text(shape)} holds {count} elements in {offset} bytes, but {len(buffer) - offset} "
            "bytes follow them"
        )
    return elements.reshape(shape)
