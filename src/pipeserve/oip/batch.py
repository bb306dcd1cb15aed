"""A batched request to pipe items, and the items' results back to batched output tensors.

NOTE [batch mapping]
A request whose inputs have a leading batch dimension N becomes N item dicts, item ``i``
holding, under each input spec's ``key``, the slice ``i`` of that input:

- numeric inputs: a numpy array of the declared per-item shape (a view into the decoded
  request tensor, which owns its memory and is writable);
- BYTES inputs declared with one element per item (shape ``[1]`` or ``[]``): the ``bytes``
  object itself, so ``{"data": jpeg_bytes}`` reaches an image pipeline as it would in process;
- other BYTES inputs: a numpy object array of ``bytes`` of the per-item shape;
- ``json`` inputs (BYTES, one element per item): the value of the JSON document (``json.loads``).

The reverse, for each declared output in order: item ``i``'s value under the spec's ``key``
becomes slice ``i`` of the output tensor. Numeric values may be numpy arrays, numpy scalars,
Python numbers or (nested) lists, converted without loss (see :func:`~pipeserve.oip.tensor.coerce`);
a one-element value fits a one-element declared shape (a float for ``[1]``). A ``json`` output
carries ``json.dumps(value)`` (UTF-8, numpy values as their Python equivalents) as one element
per item; a plain BYTES output takes ``bytes``/``str`` (one element) or arrays/lists of them.
Per-item shapes must agree within one request since the results are stacked; values whose
shape varies per item belong in a ``json`` output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import ConfigError, ContractError, InputError, TensorSpec
from .plan import Plan, SpecPlan, plan_of
from .tensor import Tensor, coerce, make_tensor, shape_text
from .validate import batch_size, shape_matches

__all__ = ["check_signature", "split_batch", "stack_outputs"]


def check_signature(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Check, when a model is loaded, that this codec can serve its declared signature.

    A ``json`` input or output holds one document per item, so its declared shape may only
    hold ones and ``-1`` (which then means 1).

    Raises:
        ConfigError: a ``json`` tensor declared with room for more than one element.
    """
    for spec in (*inputs, *outputs):
        if spec.json:
            _one_element_shape(spec)


def split_batch(tensors: Sequence[Tensor], specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    """One item dict per batch entry of ``tensors`` (see NOTE [batch mapping]).

    Args:
        tensors: a validated request's inputs (:func:`~pipeserve.oip.validate.check_request`).
        specs: the declared inputs; each tensor is found by its spec's name.

    Raises:
        InputError: the tensors disagree on the batch size, or a ``json`` input's element is not
            a JSON document.
        ConfigError: a ``json`` input declared with room for more than one element.
        KeyError: a spec without a tensor (the request was not validated).
    """
    size = batch_size(tensors)
    items: list[dict[str, Any]] = [{}] if size == 1 else [{} for _ in range(size)]
    plan = plan_of(specs)
    by_name = None if _in_declared_order(tensors, plan) else {tensor.name: tensor for tensor in tensors}
    for facts in plan.specs:
        data = (tensors[facts.index] if by_name is None else by_name[facts.name]).data
        key = facts.key
        if facts.json:
            if not facts.one_element:
                _one_element_shape(facts.spec)  # raises
            for index, (item, element) in enumerate(zip(items, data.reshape(size).tolist(), strict=True)):
                item[key] = _parse_json(facts.spec, element, index)
        elif facts.element:
            for item, element in zip(items, data.reshape(size).tolist(), strict=True):
                item[key] = element  # one element per item
        elif size == 1:
            items[0][key] = data[0, ...]
        else:
            for index, item in enumerate(items):
                item[key] = data[index, ...]  # "..." keeps a 0-d array for a scalar per item
    return items


def _in_declared_order(tensors: Sequence[Tensor], plan: Plan) -> bool:
    """Whether ``tensors`` are the declared inputs in declared order (as check_request leaves them)."""
    specs = plan.specs
    if not plan.unique or len(tensors) != len(specs):
        return False
    for index, facts in enumerate(specs):
        if tensors[index].name != facts.name:
            return False
    return True


def stack_outputs(items: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec]) -> list[Tensor]:
    """The output tensors of ``items``, one per spec in order, each ``[len(items), *per-item shape]``.

    Raises:
        ContractError: an item lacks an output's key, or its value does not fit the declared
            datatype or shape, or items disagree on a varying dimension; the message names the
            output and the item index. These are the pipeline's faults, not the client's.
        ConfigError: a ``json`` output declared with room for more than one element.
    """
    return [_stack(items, facts) for facts in plan_of(specs).specs]


def _stack(items: Sequence[Mapping[str, Any]], facts: SpecPlan) -> Tensor:
    spec, key = facts.spec, facts.key
    # Numeric arrays that already have the declared dtype and shape are taken as they are (what
    # _item_array would return for them); anything else is converted there (NOTE [fast path]).
    dtype = facts.dtype if facts.allowed and not facts.json else None  # numeric only
    fixed = facts.fixed
    values = []
    for index, item in enumerate(items):
        if key not in item:
            raise ContractError(f"output {spec.name!r}: item {index} has no key {key!r} (its keys: {sorted(item)})")
        value = item[key]
        if dtype is None or type(value) is not np.ndarray or value.dtype != dtype or value.shape != fixed:
            value = _item_array(spec, value, index)
        values.append(value)
    if fixed is None:  # a varying dimension: the items must agree on it
        for index, value in enumerate(values[1:], start=1):
            if value.shape != values[0].shape:
                raise ContractError(
                    f"output {spec.name!r}: item {index} has shape {shape_text(value.shape)} but item 0 has "
                    f"{shape_text(values[0].shape)}; outputs are stacked along the batch dimension, so per-item "
                    "shapes must agree (declare it json = true for values that vary per item)"
                )
    if not values:
        data = coerce(np.empty((0, *(max(d, 0) for d in spec.shape))), spec.datatype)
        return Tensor(spec.name, spec.datatype, data)
    if len(values) == 1:
        data = values[0][np.newaxis].copy()  # what np.stack makes of one array, without its overhead
    elif dtype is not None:
        data = np.array(values, dtype=dtype)  # same dtype and shape: numpy stacks them in one call
    else:
        data = np.stack(values)
    if facts.json and spec.datatype != "BYTES":
        return Tensor(spec.name, spec.datatype, data)  # refuses the documents: a misdeclared spec
    return make_tensor(spec.name, spec.datatype, data)  # the values have the datatype's dtype


def _item_array(spec: TensorSpec, value: Any, index: int) -> NDArray[Any]:
    if spec.json:
        try:
            document = _DOCUMENT.encode(value)
        except (TypeError, ValueError) as error:
            raise ContractError(f"output {spec.name!r}: item {index} is not JSON-serialisable: {error}") from None
        return np.array([document.encode("utf-8")], dtype=object).reshape(_one_element_shape(spec))
    try:
        array = coerce(value, spec.datatype)
    except ValueError as error:
        raise ContractError(f"output {spec.name!r}: item {index}: {error}") from None
    if shape_matches(array.shape, spec.shape):
        return array
    if array.size == 1 and all(d in (1, -1) for d in spec.shape):
        # A scalar for a declared [1] (or [x] for []): one element either way.
        return array.reshape(tuple(1 for _ in spec.shape))
    raise ContractError(
        f"output {spec.name!r}: item {index} has shape {shape_text(array.shape)}, declared {shape_text(spec.shape)}"
    )


def _parse_json(spec: TensorSpec, element: bytes, index: int) -> Any:
    try:
        return json.loads(element)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"input {spec.name!r}: item {index} is not a JSON document: {error}") from None


def _one_element_shape(spec: TensorSpec) -> tuple[int, ...]:
    if any(d not in (1, -1) for d in spec.shape):
        raise ConfigError(
            f"tensor {spec.name!r} has json = true and shape {shape_text(spec.shape)}: a JSON tensor holds one "
            "document per item, so declare its shape [1] (or [-1])"
        )
    return tuple(1 for _ in spec.shape)


def _plain(value: Any) -> Any:
    # Backends often leave numpy values in their results (scores, boxes); JSON knows lists and numbers.
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_plain), its encoder made once.
_DOCUMENT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_plain)
