"""gRPC messages of the Open Inference Protocol (``ModelInferRequest``/``ModelInferResponse``).

An input's data travels either in ``raw_input_contents`` (one entry per input, in input
order; all inputs or none) in the layout of :mod:`pipeserve.oip.raw`, or in the typed
``contents`` field its datatype uses (``fp32_contents``, ``int_contents`` for INT8/16/32,
``bytes_contents``...; FP16 and BF16 have none and must go raw). Responses always carry their
outputs in ``raw_output_contents``, as Triton does. Parameters map to and from the
``InferParameter`` oneof (bool, int64, uint64, double, string).

Server side: :func:`decode_request`, :func:`encode_response`. Client side: :func:`encode_request`,
:func:`decode_response`. Validation is :func:`~pipeserve.oip.validate.check_request`, as over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import InputError, TensorSpec
from .datatypes import DATATYPES
from .messages import InferRequest, InferResponse, Parameter, RequestedOutput, select_outputs
from .raw import decode_raw, encode_raw, raw_size
from .stubs import service_pb2
from .tensor import Tensor, coerce, element_count, shape_text
from .validate import check_request

__all__ = ["decode_request", "decode_response", "encode_request", "encode_response"]

_INT64_MAX = 2**63 - 1


def decode_request(message: Any, *, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> InferRequest:
    """Decode and validate a ``ModelInferRequest`` against the model's declared signature.

    Raises:
        InputError: malformed contents, or a request that does not fit the signature; the
            messages are those of HTTP for the same fault.
    """
    request = InferRequest(
        inputs=_tensors(message.inputs, list(message.raw_input_contents), "input"),
        id=message.id,
        outputs=_requested(message.outputs),
        parameters=_parameters_from(message.parameters, "request"),
        model_name=message.model_name,
        model_version=message.model_version,
    )
    return check_request(request, inputs, outputs)


def encode_response(response: InferResponse, request: InferRequest | None = None) -> Any:
    """A ``ModelInferResponse`` with the outputs ``request`` asked for (all when it names none), raw.

    Raises:
        InputError: the request names an output that ``response`` lacks.
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    message = service_pb2().ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    _parameters_to(response.parameters, message.parameters)
    for tensor in select_outputs(response.outputs, None if request is None else request.outputs):
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(encode_raw(tensor.datatype, tensor.data))
    return message


def encode_request(request: InferRequest) -> Any:
    """A ``ModelInferRequest`` for ``request``, its inputs raw (for a client such as the remote backend).

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    message = service_pb2().ModelInferRequest(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    _parameters_to(request.parameters, message.parameters)
    for tensor in request.inputs:
        message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_input_contents.append(encode_raw(tensor.datatype, tensor.data))
    for output in request.outputs or ():
        message.outputs.add(name=output.name)
    return message


def decode_response(message: Any) -> InferResponse:
    """The :class:`~pipeserve.oip.messages.InferResponse` a ``ModelInferResponse`` carries.

    Raises:
        InputError: malformed contents.
    """
    return InferResponse(
        model_name=message.model_name,
        model_version=message.model_version,
        outputs=_tensors(message.outputs, list(message.raw_output_contents), "output"),
        id=message.id,
        parameters=_parameters_from(message.parameters, "response"),
    )


def _tensors(entries: Sequence[Any], raw: list[bytes], kind: str) -> tuple[Tensor, ...]:
    if raw and len(raw) != len(entries):
        raise InputError(
            f"raw_{kind}_contents has {len(raw)} entries for {len(entries)} {kind}s: give every {kind} raw, or none"
        )
    tensors = []
    for index, entry in enumerate(entries):
        where = f"{kind} {entry.name!r}"
        if entry.datatype not in DATATYPES:
            raise InputError(f"{where}: unknown datatype {entry.datatype!r}; expected one of {', '.join(DATATYPES)}")
        if any(d < 0 for d in entry.shape):
            raise InputError(f"{where}: 'shape' must hold non-negative integers, got {list(entry.shape)}")
        if any(key.startswith("shared_memory") for key in entry.parameters):
            raise InputError(f"{where}: shared memory is not supported; send the data in the message")
        shape = tuple(entry.shape)
        filled = [field.name for field, _ in entry.contents.ListFields()]
        if raw:
            if filled:
                raise InputError(f"{where}: data in both raw_{kind}_contents and contents.{filled[0]}")
            data = _from_raw(raw[index], entry.datatype, shape, where, kind)
        else:
            data = _from_contents(entry.contents, filled, entry.datatype, shape, where)
        tensors.append(Tensor(entry.name, entry.datatype, data))
    return tuple(tensors)


def _from_raw(buffer: bytes, datatype: str, shape: tuple[int, ...], where: str, kind: str) -> Any:
    need = raw_size(datatype, shape)
    if need is not None and len(buffer) != need:
        raise InputError(
            f"{where}: raw_{kind}_contents holds {len(buffer)} bytes but {need} bytes are needed for "
            f"{datatype} {shape_text(shape)}"
        )
    try:
        return decode_raw(datatype, shape, buffer)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def _from_contents(contents: Any, filled: list[str], datatype: str, shape: tuple[int, ...], where: str) -> Any:
    field = DATATYPES[datatype].contents
    if not field:
        raise InputError(f"{where}: {datatype} has no typed contents field; send it in raw contents")
    stray = [name for name in filled if name != field]
    if stray:
        raise InputError(f"{where}: {datatype} data goes in contents.{field}, got contents.{stray[0]}")
    values = getattr(contents, field)
    if len(values) != element_count(shape):
        raise InputError(
            f"{where}: contents.{field} holds {len(values)} values but {datatype} {shape_text(shape)} "
            f"needs {element_count(shape)}"
        )
    try:
        # Typed fields are wider than some datatypes (int_contents is int32 for INT8): coerce checks the range.
        array = coerce(list(values), datatype)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None
    return array.reshape(shape)


def _requested(entries: Sequence[Any]) -> tuple[RequestedOutput, ...] | None:
    if not entries:
        return None
    requested = []
    for entry in entries:
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in entry.parameters:
                raise InputError(f"output {entry.name!r}: parameter {unsupported!r} is not supported")
        requested.append(RequestedOutput(entry.name))
    return tuple(requested)


def _parameters_from(parameters: Mapping[str, Any], where: str) -> dict[str, Parameter]:
    converted: dict[str, Parameter] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InputError(f"{where}: parameter {key!r} has no value")
        converted[key] = getattr(parameter, choice)
    return converted


def _parameters_to(parameters: Mapping[str, Parameter], target: Any) -> None:
    for key, value in parameters.items():
        if isinstance(value, bool):  # before int: bool is an int in Python
            target[key].bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                target[key].uint64_param = value
            else:
                target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = value
