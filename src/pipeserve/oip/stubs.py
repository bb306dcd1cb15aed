"""The generated protobuf modules of the Open Inference Protocol, imported on first use.

``tritonclient[grpc]`` ships them (as ``tritonclient.grpc.service_pb2`` and
``tritonclient.grpc.model_config_pb2``); pipeserve imports them only when a gRPC message is
built or read, so the HTTP path works without them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .. import MissingDependencyError

__all__ = ["model_config_pb2", "service_pb2"]


def service_pb2() -> ModuleType:
    """The ``inference`` service messages (``ModelInferRequest``...).

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    return _load("tritonclient.grpc.service_pb2")


def model_config_pb2() -> ModuleType:
    """The model configuration messages (``ModelConfig``...).

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    return _load("tritonclient.grpc.model_config_pb2")


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingDependencyError(
            f"gRPC messages need tritonclient[grpc] ({error}); install pipeserve[serve]"
        ) from error
