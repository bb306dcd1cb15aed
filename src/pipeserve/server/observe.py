"""What a server shows of itself besides the protocol: ``GET /metrics`` (Prometheus), ``GET /``
(the live status page), ``GET /status.json`` (the figures the page draws) and the page's files
(``GET /static/...``), all served from the package: the page needs no internet access.

See docs/observability.md for every metric, the status document and the page.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

from .. import __version__
from ..metrics import WatchedModel, exposition, model_counters, server_registry
from .model import ServedModel
from .state import ServerState

__all__ = ["Observatory", "status_document"]

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


class Observatory:
    """The observability endpoints of one server.

    Args:
        state: the server's models.
        metrics: serve ``/metrics``: True needs prometheus-client (else MissingDependencyError),
            None serves them when it is installed, False never.
    """

    def __init__(self, state: ServerState, *, metrics: bool | None = None) -> None:
        self.state = state
        self.started = time.time()
        self.registry: Any = None
        if metrics or (metrics is None and importlib.util.find_spec("prometheus_client") is not None):
            self.registry = server_registry(self.watched)

    def watched(self) -> Iterable[WatchedModel]:
        """The models ready now, as the metrics collector sees them."""
        return [_watch(model) for model in self.state.repository.ready_models()]

    def metrics(self) -> tuple[bytes, str] | None:
        """``/metrics``: the text exposition and its content type (None when metrics are off)."""
        return None if self.registry is None else exposition(self.registry)

    def status(self) -> dict[str, Any]:
        """``/status.json``: see :func:`status_document`."""
        return status_document(self.state, self.started)

    @staticmethod
    def static(name: str) -> tuple[bytes, str] | None:
        """A file of the status page (``index.html`` for ``/``), or None if there is none."""
        if "/" in name or name.startswith("."):
            return None
        suffix = name[name.rfind(".") :] if "." in name else ""
        if suffix not in STATIC_TYPES:
            return None
        resource = resources.files("pipeserve.server").joinpath("static", name)
        if not resource.is_file():
            return None
        return resource.read_bytes(), STATIC_TYPES[suffix]


def _watch(model: ServedModel) -> WatchedModel:
    return WatchedModel(model.name, model.pipe, model.tally, model.entry)


def status_document(state: ServerState, started: float) -> dict[str, Any]:
    """The server's live figures as plain data (what the status page polls).

    ``{"server": {...}, "models": [...]}``: the server's name, version, uptime, readiness and
    the time of the snapshot (``time_ms``); per model its state, its request counts as
    ``/v2/models/{m}/stats`` gives them (``counters``), the recent latency percentiles, its graph
    (every node with its links) and per scheduled node the pipe's statistics (``Pipe.stats()``
    plus per-instance state, batches and busy time). Pages compute rates from two snapshots.
    """
    repository = state.repository
    ready = {model.name: model for model in repository.ready_models()}
    models = []
    for entry in repository.index():
        model = ready.get(entry.name)
        document: dict[str, Any] = {"name": entry.name, "state": entry.state, "reason": entry.reason}
        if model is not None:
            document.update(_model_document(model))
        models.append(document)
    return {
        "server": {
            "name": "pipeserve",
            "version": __version__,
            "uptime_s": round(time.time() - started, 3),
            "ready": state.ready,
            "time_ms": int(time.time() * 1000),
        },
        "models": models,
    }


def _model_document(model: ServedModel) -> dict[str, Any]:
    tally = model.tally.snapshot()
    statistics = model.pipe.statistics()  # one snapshot for Triton's figures and the nodes'
    counters = model_counters(model.name, model.pipe, tally, model.entry, statistics)
    description = model.pipe.describe()
    health = model.pipe.health().nodes
    nodes = {}
    for name, node in statistics.items():
        # Busy time includes the batches running now, so that a slow stage's busy fraction is
        # continuous rather than jumping when its batch ends.
        running = {i.index: i.busy_seconds for i in health[name].instances} if name in health else {}
        figures = node.as_dict()
        figures["queue_seconds"] = node.queue_seconds
        figures["instances"] = [
            {
                "index": i.index,
                "state": i.state,
                "batches": i.batches,
                "items": i.items,
                "running": i.running,
                "busy_seconds": i.compute_seconds + running.get(i.index, 0.0),
            }
            for i in node.instances
        ]
        figures["busy_seconds"] = sum(i["busy_seconds"] for i in figures["instances"])
        described = description.nodes.get(name)
        if described is not None:
            figures["backend"] = described.backend
            figures["instance_kind"] = described.instance_kind
            figures["active_instances"] = described.active_instances
            figures["cpu_threads"] = described.cpu_threads
            figures["batch_range"] = list(described.batch_range)
            figures["batching_timeout_ms"] = described.batching_timeout_ms
        nodes[name] = figures
    return {
        "entry": model.entry,
        "counters": {
            "success": counters.success.count,
            "fail": counters.fail.count,
            "inference_count": counters.inference_count,
            "execution_count": counters.execution_count,
            "success_ns": counters.success.ns,
            "queue_ns": counters.queue.ns,
            "compute_ns": counters.compute.ns,
            "last_inference_ms": counters.last_inference_ms,
        },
        "failures": {reason: count for reason, (count, _) in sorted(tally.failures.items())},
        "errors": dict(sorted(tally.errors.items())),
        "pending": tally.pending,
        "latency_ms": model.tally.recent_percentiles(),
        "graph": [
            {
                "name": node.name,
                "kind": node.kind,
                "scheduler": node.scheduler,
                "next": list(node.next),
                "jump": node.jump,
                "filter": node.filter,
            }
            for node in description.graph.values()
        ],
        "nodes": nodes,
        "autotune": model.pipe.autotune.status() if model.pipe.autotune is not None else None,
    }
