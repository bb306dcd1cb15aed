"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``grpc.aio``.

The service is the one Triton's clients call, from the generated code that ``tritonclient[grpc]``
ships; requests go through the same codec (:mod:`pipeserve.oip`), models and error table
(:mod:`pipeserve.server.errors`) as over HTTP. A call's deadline bounds the request inside the
pipe; a call that is cancelled, or whose deadline passes, cancels the request's items (NOTE
[disconnect] in :mod:`pipeserve.server.http`). Streaming inference and the shared-memory
extensions answer UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .. import __version__, oip
from .errors import Unsupported, status_of
from .http import EXTENSIONS
from .state import ServerState, config_parameter

__all__ = ["MAX_MESSAGE", "InferenceService", "add_service"]

MAX_MESSAGE = 2**31 - 1  # bytes; as Triton and tritonclient set their channels


def add_service(server: grpc.aio.Server, state: ServerState) -> None:
    """Register the inference service on ``server``."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)


async def _abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    status = status_of(error)
    await context.abort(getattr(grpc.StatusCode, status.grpc), status.message)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Each RPC of the service; errors go through the one table."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=self.state.live)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.state.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._model(request.name, request.version)
        except Exception:  # noqa: BLE001 - an unknown or unready model is just "not ready"
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name="pipeserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return oip.model_metadata_message(self._model(request.name, request.version).description)
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return oip.model_config_message(self._model(request.name, request.version).description)
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if request.name:
                models = [self._model(request.name, request.version)]
            else:
                models = self.state.repository.ready_models()
            return oip.model_statistics_message([model.counters() for model in models])
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._model(request.model_name, request.model_version)
            timeout = context.time_remaining()
            if self.state.timeout is not None and (timeout is None or self.state.timeout < timeout):
                timeout = self.state.timeout
            model, submitted = self.state.submit(
                request.model_name,
                lambda model: oip.grpc_codec.decode_request(request, inputs=model.inputs, outputs=model.outputs),
                timeout,
                _traceparent(context),
            )
            if not submitted.done:
                await model.wait(submitted)
            return oip.grpc_codec.encode_response(model.respond(submitted), submitted.request)
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    async def ModelStreamInfer(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context, Unsupported("streaming inference is not supported by pipeserve"))

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = service_pb2.RepositoryIndexResponse()
        for entry in self.state.repository.index(request.ready):
            response.models.add(name=entry.name, version="1", state=entry.state, reason=entry.reason)
        return response

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            parameters = request.parameters
            raw = parameters["config"].string_param if "config" in parameters else None
            await self.state.load(request.model_name, config_parameter(raw))
            return service_pb2.RepositoryModelLoadResponse()
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await self.state.unload(request.model_name)
            return service_pb2.RepositoryModelUnloadResponse()
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            await _abort(context, exc)

    def _model(self, name: str, version: str) -> Any:
        if version not in ("", "1"):
            from .errors import ModelNotFound

            raise ModelNotFound(f"unknown version {version!r} of model {name!r}; pipeserve serves version 1")
        return self.state.repository.get(name)


def _traceparent(context: grpc.aio.ServicerContext) -> str | None:
    """The W3C ``traceparent`` the client sent in its metadata, if any (NOTE [traces])."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None
