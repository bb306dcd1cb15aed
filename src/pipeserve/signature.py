"""What an entry declares it takes and returns: named, typed tensors mapped to item keys.

An entry node may declare its inputs and outputs, for the layers that speak a tensor protocol
(the server, the remote backend, the Ray ingress). The core itself never reads them on the
request path: a pipe called in process still takes any dict.

.. code-block:: toml

    [classify]
    backend = "Onnx"
    inputs = [{ name = "INPUT0", datatype = "FP32", shape = [3, 224, 224] }]
    outputs = [{ name = "PROBS", datatype = "FP32", shape = [1000] }]

Each declaration has ``name`` (the protocol's tensor name), ``datatype`` (one of
:data:`DATATYPES`, the Open Inference Protocol's names), ``shape`` (per item, without the batch
dimension; ``-1`` for a dimension that varies) and ``key`` (the item key it maps to: ``data`` for
the first input and ``result`` for the first output by default, the tensor's name for the
others). A ``BYTES`` output with ``json = true`` carries any Python value of the item (a list of
dicts, say) as one JSON document per item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["DATATYPES", "TensorSpec", "parse_signature"]

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output of an entry.

    Attributes:
        name: the tensor's name in the protocol.
        datatype: its element type, one of :data:`DATATYPES`.
        shape: its shape per item, without the batch dimension; -1 marks a varying dimension.
        key: the item key it is read from (outputs) or written to (inputs).
        json: for a BYTES output: the item's value is sent as one JSON document per item.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    key: str
    json: bool = False


def parse_signature(params: Mapping[str, Any], node: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Read the ``inputs`` and ``outputs`` declarations of an entry node (empty when absent).

    Raises:
        ConfigError: a declaration that is not a table, lacks ``name``/``datatype``, names an
            unknown datatype, has a bad shape, or repeats a name or key.
    """
    inputs = _parse(params.get("inputs", ()), "inputs", "data", node)
    outputs = _parse(params.get("outputs", ()), "outputs", "result", node)
    return inputs, outputs


def _parse(raw: Any, key: str, first_key: str, node: str) -> tuple[TensorSpec, ...]:
    if isinstance(raw, Mapping) or not isinstance(raw, (list, tuple)):
        raise ConfigError(f"expected a list of tables {{name, datatype, shape}}, got {raw!r}", node=node, key=key)
    specs: list[TensorSpec] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"entry {index}: expected a table {{name, datatype, shape}}, got {entry!r}", node=node, key=key
            )
        unknown = set(entry) - {"name", "datatype", "shape", "key", "json"}
        if unknown:
            raise ConfigError(f"entry {index}: unknown fields {sorted(unknown)}", node=node, key=key)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"entry {index}: 'name' must be a non-empty string", node=node, key=key)
        datatype = str(entry.get("datatype", "")).upper()
        if datatype not in DATATYPES:
            raise ConfigError(
                f"tensor {name!r}: expected a datatype among {', '.join(DATATYPES)}, got {entry.get('datatype')!r}",
                node=node,
                key=key,
            )
        shape = entry.get("shape", [-1])
        if not isinstance(shape, (list, tuple)) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < -1 or d == 0 for d in shape
        ):
            raise ConfigError(
                f"tensor {name!r}: expected a shape of positive integers or -1, got {shape!r}", node=node, key=key
            )
        as_json = entry.get("json", False)
        if not isinstance(as_json, bool) or (as_json and datatype != "BYTES"):
            raise ConfigError(f"tensor {name!r}: 'json = true' needs datatype BYTES", node=node, key=key)
        item_key = entry.get("key", first_key if index == 0 else name)
        specs.append(TensorSpec(name, datatype, tuple(shape), str(item_key), as_json))
    for attribute in ("name", "key"):
        seen = [getattr(spec, attribute) for spec in specs]
        repeated = sorted({value for value in seen if seen.count(value) > 1})
        if repeated:
            raise ConfigError(f"repeated tensor {attribute}s {repeated}", node=node, key=key)
    return tuple(specs)
