"""Per-model counters as Triton's statistics extension reports them.

:func:`model_statistics` answers ``GET /v2/models/stats`` (and gRPC ``ModelStatistics``):
``{"model_stats": [...]}``, one entry per model, durations as ``{count, ns}``. pipeserve
measures one compute figure per batch, reported as ``compute_infer``; ``compute_input`` and
``compute_output`` carry the same count with 0 ns, so tools that divide ns by count (as
``perf_analyzer`` does) see a zero rather than a division by zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .stubs import service_pb2

__all__ = ["Duration", "ModelCounters", "model_statistics", "model_statistics_message"]


@dataclass(frozen=True)
class Duration:
    """How many times something happened and the nanoseconds it took in all."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class ModelCounters:
    """One model's cumulative counters since it was loaded.

    Attributes:
        name: the model's name.
        version: its version.
        success: requests that succeeded, and their total time from arrival to response.
        fail: requests that failed, and their total time.
        queue: requests' time waiting for an instance.
        compute: batches run, and their total compute time.
        inference_count: items inferred (a request with a batch of 4 counts 4).
        execution_count: batches run.
        last_inference_ms: when the last request finished, in milliseconds since the epoch (0: never).
        batches: for each batch size, the batches of that size run and their compute time.
    """

    name: str
    version: str = "1"
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute: Duration = Duration()
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: Mapping[int, Duration] = field(default_factory=dict)


def model_statistics(models: Iterable[ModelCounters]) -> dict[str, Any]:
    """Triton's statistics JSON, ``{"model_stats": [...]}``, one entry per model in order."""
    return {"model_stats": [_entry(model) for model in models]}


def model_statistics_message(models: Iterable[ModelCounters]) -> Any:
    """:func:`model_statistics` as a gRPC ``ModelStatisticsResponse``.

    Raises:
        MissingDependencyError: ``tritonclient[grpc]`` is not installed.
    """
    from google.protobuf import json_format

    return json_format.ParseDict(model_statistics(models), service_pb2().ModelStatisticsResponse())


def _entry(model: ModelCounters) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": model.last_inference_ms,
        "inference_count": model.inference_count,
        "execution_count": model.execution_count,
        "inference_stats": {
            "success": _duration(model.success),
            "fail": _duration(model.fail),
            "queue": _duration(model.queue),
            **_compute(model.compute),
            "cache_hit": _duration(Duration()),
            "cache_miss": _duration(Duration()),
        },
        "batch_stats": [{"batch_size": size, **_compute(model.batches[size])} for size in sorted(model.batches)],
        "memory_usage": [],
    }


def _compute(compute: Duration) -> dict[str, dict[str, int]]:
    return {
        "compute_input": _duration(Duration(compute.count, 0)),
        "compute_infer": _duration(compute),
        "compute_output": _duration(Duration(compute.count, 0)),
    }


def _duration(duration: Duration) -> dict[str, int]:
    return {"count": duration.count, "ns": duration.ns}
