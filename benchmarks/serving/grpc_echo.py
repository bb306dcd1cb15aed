"""The gRPC ceiling in benchmarks/serving.py: a bare grpc.aio server whose ModelInfer echoes.

It uses the servicer that ``tritonclient[grpc]`` generates (``inference.GRPCInferenceService``) on
grpc.aio in a uvloop event loop, as pipeserve's server does. ModelInfer answers OUTPUT0 with the
request's first input as it came (raw contents, datatype and shape). So that perf_analyzer can drive
it, it also answers the start-up calls perf_analyzer makes (ServerMetadata, ModelMetadata,
ModelConfig, ModelStatistics) and the health calls, minimally, for one model: ``identity``,
FP32 [-1, 1] in and out. Everything else is the generated base class's UNIMPLEMENTED.

    python benchmarks/serving/grpc_echo.py --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

MODEL = "identity"
MAX_MESSAGE = 2**31 - 1


class Echo(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """ModelInfer echoes; the metadata calls describe one FP32 [-1, 1] model."""

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ModelReadyResponse(ready=request.name == MODEL)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="grpc-echo", version="0", extensions=[])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        if request.name != MODEL:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=MODEL,
            versions=["1"],
            platform="echo",
            inputs=[tensor(name="INPUT0", datatype="FP32", shape=[-1, 1])],
            outputs=[tensor(name="OUTPUT0", datatype="FP32", shape=[-1, 1])],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        if request.name != MODEL:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        fp32 = model_config_pb2.DataType.TYPE_FP32
        config = model_config_pb2.ModelConfig(
            name=MODEL,
            platform="echo",
            max_batch_size=64,
            input=[model_config_pb2.ModelInput(name="INPUT0", data_type=fp32, dims=[1])],
            output=[model_config_pb2.ModelOutput(name="OUTPUT0", data_type=fp32, dims=[1])],
        )
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        # Counts nothing: perf_analyzer's server-side block then reads zeros.
        return service_pb2.ModelStatisticsResponse(model_stats=[service_pb2.ModelStatistics(name=MODEL, version="1")])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        first = request.inputs[0]
        return service_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[
                service_pb2.ModelInferResponse.InferOutputTensor(
                    name="OUTPUT0", datatype=first.datatype, shape=first.shape
                )
            ],
            raw_output_contents=request.raw_input_contents[:1],
        )


async def serve(port: int) -> None:
    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
