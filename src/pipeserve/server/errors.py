"""The one table from pipeserve's errors to HTTP and gRPC statuses (SPEC 6).

Every handler, HTTP or gRPC, turns an exception into a response here and nowhere else:

| error | HTTP | gRPC |
|---|---|---|
| ModelNotFound (unknown or unloaded model) | 404 | NOT_FOUND |
| InputError, ConfigError in a request (bad body, datatype, shape, missing input) | 400 | INVALID_ARGUMENT |
| BodyTooLarge | 413 | RESOURCE_EXHAUSTED |
| Overloaded | 503 + ``Retry-After`` | UNAVAILABLE |
| PipeClosed, ModelNotReady (draining, unloading, loading) | 503 | UNAVAILABLE |
| RequestTimeout | 504 | DEADLINE_EXCEEDED |
| Unsupported (shared memory, streaming) | 501 | UNIMPLEMENTED |
| BackendError, ContractError and anything else | 500 | INTERNAL |

The message is the error's own text, which names node, backend and instance for errors raised
inside the pipe; the HTTP body is the protocol's ``{"error": message}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ConfigError, InputError, Overloaded, PipeClosed, PipeServeError, RequestTimeout

__all__ = ["BodyTooLarge", "ModelNotFound", "ModelNotReady", "Status", "Unsupported", "status_of"]

RETRY_AFTER_S = 1  # what an overloaded server tells clients to wait, in seconds


class ModelNotFound(PipeServeError):
    """No model of that name (or version) is loaded."""


class ModelNotReady(PipeServeError):
    """The model exists but cannot take requests now (loading, unloading, draining)."""


class BodyTooLarge(PipeServeError):
    """A request body is larger than the server accepts."""


class Unsupported(PipeServeError):
    """A protocol feature pipeserve does not implement (shared memory, streaming)."""


@dataclass(frozen=True)
class Status:
    """How one error goes over the wire.

    Attributes:
        http: the HTTP status code.
        grpc: the name of the gRPC status code (``grpc.StatusCode`` member).
        message: the error's text.
        retry_after: seconds for the ``Retry-After`` header, or None.
    """

    http: int
    grpc: str
    message: str
    retry_after: int | None = None


def status_of(error: BaseException) -> Status:
    """The wire status of ``error`` (see the module's table)."""
    message = str(error) or type(error).__name__
    if isinstance(error, ModelNotFound):
        return Status(404, "NOT_FOUND", message)
    if isinstance(error, (InputError, ConfigError)):
        return Status(400, "INVALID_ARGUMENT", message)
    if isinstance(error, BodyTooLarge):
        return Status(413, "RESOURCE_EXHAUSTED", message)
    if isinstance(error, Overloaded):
        return Status(503, "UNAVAILABLE", message, RETRY_AFTER_S)
    if isinstance(error, (PipeClosed, ModelNotReady)):
        return Status(503, "UNAVAILABLE", message)
    if isinstance(error, RequestTimeout):
        return Status(504, "DEADLINE_EXCEEDED", message)
    if isinstance(error, Unsupported):
        return Status(501, "UNIMPLEMENTED", message)
    return Status(
        500, "INTERNAL", message if isinstance(error, PipeServeError) else f"{type(error).__name__}: {message}"
    )
