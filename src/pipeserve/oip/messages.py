"""An inference request and response as both transports see them, independent of the wire.

HTTP and gRPC decode to :class:`InferRequest` and encode from :class:`InferResponse`; the
server in between works on these only. Parameters are the protocol's scalars (``bool``,
``int``, ``float``, ``str``); the ones pipeserve reads are ``timeout`` (microseconds, as
Triton's) and, over HTTP, ``binary_data_output``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import InputError
from .tensor import Tensor

__all__ = ["InferRequest", "InferResponse", "Parameter", "RequestedOutput", "select_outputs"]

Parameter = bool | int | float | str
"""A request, input or output parameter: the scalar types both transports can carry."""


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for by name.

    Attributes:
        name: the output's name.
        binary: over HTTP, whether to send it as binary data after the JSON header (the
            output's ``binary_data`` parameter); ``None`` when not stated, in which case the
            request's ``binary_data_output`` parameter decides. gRPC ignores it.
    """

    name: str
    binary: bool | None = None


@dataclass(frozen=True, init=False)
class InferRequest:
    """A decoded inference request.

    Attributes:
        inputs: its input tensors; after validation, in the order the model declares them.
        id: the request's id, echoed in the response ("" when none).
        outputs: the outputs asked for, in order; ``None`` means every declared output.
        parameters: request parameters (``timeout``, ``binary_data_output``, custom ones).
        model_name: the model named in the message (gRPC); "" over HTTP, where the URL names it.
        model_version: the version named in the message; "" when none.
    """

    inputs: tuple[Tensor, ...]
    id: str = ""
    outputs: tuple[RequestedOutput, ...] | None = None
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""

    def __init__(
        self,
        inputs: tuple[Tensor, ...],
        id: str = "",
        outputs: tuple[RequestedOutput, ...] | None = None,
        parameters: Mapping[str, Parameter] | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> None:
        # See NOTE [frozen messages] in tensor.py; parameters default to a fresh {}.
        fields = self.__dict__
        fields["inputs"] = inputs
        fields["id"] = id
        fields["outputs"] = outputs
        fields["parameters"] = {} if parameters is None else parameters
        fields["model_name"] = model_name
        fields["model_version"] = model_version

    @property
    def timeout_s(self) -> float | None:
        """The ``timeout`` parameter in seconds (the protocol gives microseconds), or ``None``.

        A valid request (see :func:`~pipeserve.oip.validate.check_request`) has a
        non-negative integer there; zero means no timeout, as in Triton.
        """
        value = self.parameters.get("timeout")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None
        return value / 1e6


@dataclass(frozen=True, init=False)
class InferResponse:
    """An inference response before encoding.

    Attributes:
        model_name: the model that answered.
        outputs: every output it produced, in declared order; the encoders pick the requested ones.
        model_version: the version that answered.
        id: the request's id, echoed.
        parameters: response parameters, usually none.
    """

    model_name: str
    outputs: tuple[Tensor, ...]
    model_version: str = "1"
    id: str = ""
    parameters: Mapping[str, Parameter] = field(default_factory=dict)

    def __init__(
        self,
        model_name: str,
        outputs: tuple[Tensor, ...],
        model_version: str = "1",
        id: str = "",
        parameters: Mapping[str, Parameter] | None = None,
    ) -> None:
        # See NOTE [frozen messages] in tensor.py; parameters default to a fresh {}.
        fields = self.__dict__
        fields["model_name"] = model_name
        fields["outputs"] = outputs
        fields["model_version"] = model_version
        fields["id"] = id
        fields["parameters"] = {} if parameters is None else parameters


def select_outputs(outputs: Sequence[Tensor], requested: Sequence[RequestedOutput] | None) -> tuple[Tensor, ...]:
    """The tensors of ``outputs`` that ``requested`` names, in the requested order (all when ``None``).

    Raises:
        InputError: a requested name that ``outputs`` lacks.
    """
    if requested is None:
        return tuple(outputs)
    by_name = {tensor.name: tensor for tensor in outputs}
    selected = []
    for output in requested:
        tensor = by_name.get(output.name)
        if tensor is None:
            raise InputError(f"unknown output {output.name!r}; available: {sorted(by_name)}")
        selected.append(tensor)
    return tuple(selected)
