"""Check a decoded request against the model's declared inputs and outputs.

Both transports call :func:`check_request` after decoding, so a client gets the same message
over HTTP and gRPC. Every declared shape is per item; a request carries a leading batch
dimension before it, so an input declared ``[4]`` arrives as ``[N, 4]`` and the model's
metadata shows it as ``[-1, 4]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .. import InputError, TensorSpec
from .messages import InferRequest, RequestedOutput
from .plan import SpecPlan, plan_of
from .tensor import Tensor, element_count, shape_text

__all__ = ["batch_size", "check_request", "check_requested", "shape_matches"]


def check_request(request: InferRequest, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> InferRequest:
    """Validate ``request`` against the declared ``inputs`` and ``outputs``.

    Checks, in this order: no input given twice, none unknown, none missing; each input's
    datatype and shape (a batch dimension, then the declared per-item shape, ``-1`` matching
    any size; one element per item for a ``json`` input); every input's batch size the same
    and at least 1; requested outputs declared and not repeated; the ``timeout`` and
    ``binary_data_output`` parameters well typed.

    Returns:
        The same request with its inputs in declared order.

    Raises:
        InputError: the first problem found, saying what was expected and what came.
    """
    plan = plan_of(inputs)
    given: dict[str, Tensor] = {}
    for tensor in request.inputs:
        if tensor.name in given:
            raise InputError(f"input {tensor.name!r} is given twice")
        given[tensor.name] = tensor
    declared = plan.names
    for name in given:
        if name not in plan.by_name:
            raise InputError(f"unknown input {name!r}; declared: {declared}")
    ordered = []
    for facts in plan.specs:
        found = given.get(facts.name)
        if found is None:
            raise InputError(f"missing input {facts.name!r}; declared: {declared}")
        _check_input(found, facts)
        ordered.append(found)
    batch_size(ordered)
    if request.outputs is not None:
        check_requested(request.outputs, [spec.name for spec in outputs])
    _check_parameters(request)
    now = request.inputs
    if type(now) is tuple and len(now) == len(ordered) and all(a is b for a, b in zip(now, ordered, strict=True)):
        return request  # already in declared order
    return replace(request, inputs=tuple(ordered))


def batch_size(tensors: Sequence[Tensor]) -> int:
    """The batch size that ``tensors`` share: the first dimension of each.

    Raises:
        InputError: no tensors, a tensor without a batch dimension, a batch of 0, or tensors
            that disagree.
    """
    if tensors:
        first = tensors[0].data.shape
        if first and first[0]:
            size: int = first[0]
            for tensor in tensors:
                shape = tensor.data.shape
                if not shape or shape[0] != size:
                    break
            else:
                return size
    return _batch_size(tensors)


def _batch_size(tensors: Sequence[Tensor]) -> int:
    """:func:`batch_size` worked out in full, for messages (a fault is likely)."""
    if not tensors:
        raise InputError("the request has no inputs")
    sizes = {}
    for tensor in tensors:
        if not tensor.shape:
            raise InputError(f"input {tensor.name!r}: expected a leading batch dimension, got a scalar")
        sizes[tensor.name] = tensor.shape[0]
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{name!r} has {size}" for name, size in sizes.items())
        raise InputError(f"inputs disagree on the batch size (the first dimension): {described}")
    size = next(iter(sizes.values()))
    if size == 0:
        raise InputError("batch size 0: a request needs at least one item")
    return size


def shape_matches(shape: Sequence[int], declared: Sequence[int]) -> bool:
    """Whether ``shape`` fits ``declared``, where ``-1`` in ``declared`` matches any size."""
    return len(shape) == len(declared) and all(d == -1 or d == s for s, d in zip(shape, declared, strict=True))


def _check_input(tensor: Tensor, facts: SpecPlan) -> None:
    if tensor.datatype != facts.datatype:
        raise InputError(f"input {facts.name!r}: expected datatype {facts.datatype}, got {tensor.datatype}")
    shape = tensor.data.shape
    if not (len(shape) == len(facts.shape) + 1 and shape[1:] == facts.fixed) and not shape_matches(
        shape, (-1, *facts.shape)
    ):
        raise InputError(
            f"input {facts.name!r}: expected shape {shape_text((-1, *facts.shape))} "
            f"(a batch of {shape_text(facts.shape)} items), got {shape_text(shape)}"
        )
    if facts.json and element_count(shape[1:]) != 1:
        raise InputError(
            f"input {facts.name!r}: a JSON input holds one document per item, so expected shape "
            f"{shape_text((-1, *facts.ones))}, got {shape_text(shape)}"
        )


def check_requested(requested: Sequence[RequestedOutput], declared: list[str]) -> None:
    """Check that every requested output is declared and asked for once.

    Raises:
        InputError: the first unknown or repeated output.
    """
    seen = set()
    for output in requested:
        if output.name not in declared:
            raise InputError(f"unknown output {output.name!r}; declared: {declared}")
        if output.name in seen:
            raise InputError(f"output {output.name!r} is requested twice")
        seen.add(output.name)


def _check_parameters(request: InferRequest) -> None:
    timeout = request.parameters.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
        raise InputError(f"parameter 'timeout': expected a non-negative integer (microseconds), got {timeout!r}")
    binary = request.parameters.get("binary_data_output")
    if binary is not None and not isinstance(binary, bool):
        raise InputError(f"parameter 'binary_data_output': expected true or false, got {binary!r}")
