"""A model's metadata and configuration as Triton reports them, from its declared signature.

:func:`model_metadata` answers ``GET /v2/models/{name}`` (and gRPC ``ModelMetadata``);
:func:`model_config` answers ``GET /v2/models/{name}/config`` (and gRPC ``ModelConfig``), which
``perf_analyzer`` and Triton clients read for the batch size and the tensors' shapes.
Declared shapes are per item: the metadata puts a leading ``-1`` (the batch) before them when
the model batches (``max_batch_size > 0``); the configuration's ``dims`` never do, as in Triton.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import ConfigError, TensorSpec
from .datatypes import config_name
from .stubs import model_config_pb2, service_pb2

__all__ = ["ModelDescription", "model_config", "model_config_message", "model_metadata", "model_metadata_message"]


@dataclass(frozen=True)
class ModelDescription:
    """What a served model tells clients about itself.

    Attributes:
        name: the model's name.
        inputs: its declared inputs.
        outputs: its declared outputs.
        version: its version (pipeserve serves one: "1").
        platform: the platform string clients see (e.g. ``"pipeserve"``).
        max_batch_size: the largest batch it takes in one request; 0 for no batch dimension.
        preferred_batch_sizes: batch sizes its dynamic batcher aims for.
        max_queue_delay_us: how long a partial batch may wait, in microseconds.
        instance_count: how many instances run it.
        instance_kind: Triton's instance kind, ``"KIND_CPU"`` or ``"KIND_GPU"``.

    Raises:
        ConfigError: a negative batch size or delay, or fewer than one instance.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    version: str = "1"
    platform: str = "pipeserve"
    max_batch_size: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"

    def __post_init__(self) -> None:
        if self.max_batch_size < 0 or self.max_queue_delay_us < 0 or any(s < 1 for s in self.preferred_batch_sizes):
            raise ConfigError(f"model {self.name!r}: batch sizes and delays must not be negative")
        if self.instance_count < 1:
            raise ConfigError(f"model {self.name!r}: expected at least one instance, got {self.instance_count}")


def model_metadata(model: ModelDescription) -> dict[str, Any]:
    """Triton's model metadata JSON: ``{name, versions, platform, inputs, outputs}``."""
    batch = [-1] if model.max_batch_size > 0 else []

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        return {"name": spec.name, "datatype": spec.datatype, "shape": [*batch, *spec.shape]}

    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [tensor(spec) for spec in model.inputs],
        "outputs": [tensor(spec) for spec in model.outputs],
    }


def model_config(model: ModelDescription) -> dict[str, Any]:
    """Triton's model configuration JSON (``max_batch_size``, ``input``, ``output``, batching, instances)."""
    config: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": model.max_batch_size,
        "input": [_config_input(spec, model.max_batch_size > 0) for spec in model.inputs],
        "output": [_config_output(spec, model.max_batch_size > 0) for spec in model.outputs],
        "instance_group": [
            {"name": f"{model.name}_0", "kind": model.instance_kind, "count": model.instance_count, "gpus": []}
        ],
    }
    if model.max_batch_size > 0:  # Triton allows a dynamic batcher only for batching models
        config["dynamic_batching"] = {
            "preferred_batch_size": list(model.preferred_batch_sizes),
            "max_queue_delay_microseconds": model.max_queue_delay_us,
            "preserve_ordering": False,
        }
    return config


def model_metadata_message(model: ModelDescription) -> Any:
    """:func:`model_metadata` as a gRPC ``ModelMetadataResponse``.

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    from google.protobuf import json_format

    return json_format.ParseDict(model_metadata(model), service_pb2().ModelMetadataResponse())


def model_config_message(model: ModelDescription) -> Any:
    """:func:`model_config` as a gRPC ``ModelConfigResponse``.

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    from google.protobuf import json_format

    config = json_format.ParseDict(model_config(model), model_config_pb2().ModelConfig())
    return service_pb2().ModelConfigResponse(config=config)


def _config_input(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    entry = {
        "name": spec.name,
        "data_type": config_name(spec.datatype),
        "format": "FORMAT_NONE",
        **_dims(spec, batched),
        "is_shape_tensor": False,
        "allow_ragged_batch": False,
        "optional": False,
    }
    return entry


def _config_output(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    return {
        "name": spec.name,
        "data_type": config_name(spec.datatype),
        **_dims(spec, batched),
        "label_filename": "",
        "is_shape_tensor": False,
    }


def _dims(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    # A batching Triton model cannot declare empty dims; a scalar per item is dims [1] reshaped to [].
    if batched and not spec.shape:
        return {"dims": [1], "reshape": {"shape": []}}
    return {"dims": list(spec.shape)}
