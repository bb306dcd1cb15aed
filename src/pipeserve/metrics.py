"""Prometheus metrics of pipes: Triton's names per model, pipeserve's own per node and instance.

In your own service, one call exposes a pipe's metrics in ``prometheus_client``'s default
registry (``pipeserve[metrics]``)::

    import pipeserve, pipeserve.metrics
    pipe = pipeserve.pipe("ocr.toml")
    pipeserve.metrics.register(pipe, model="ocr")    # then serve prometheus_client's registry

``pipeserve serve`` serves the same families at ``GET /metrics`` for every loaded model.

NOTE [metric sources]
Nothing is counted for metrics alone on a request's path. Per-node figures are the pipe's own
statistics (``Pipe.statistics()``), read when Prometheus scrapes. Per-model request counts and
latencies come from a :class:`RequestTally`: the server's handlers record each protocol request
in it; for an in-process pipe, :func:`register` adds an observer (``Pipe.add_observer``) that
records each request. A scrape reads both under short locks and builds the families then (a
custom collector), so the cost of metrics is the tally's few additions per request and the
scrape itself. docs/observability.md lists every family.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError as FutureCancelled
from dataclasses import dataclass, replace
from typing import Any

from . import BackendError, ComputeTimeout, MissingDependencyError, NodeStatistics, Overloaded, Pipe, oip

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "PipeCollector",
    "TRITON_COUNTERS",
    "RequestTally",
    "TallySnapshot",
    "WatchedModel",
    "charge",
    "exposition",
    "failure_reason",
    "model_counters",
    "register",
    "server_registry",
    "unregister",
]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")  # Triton's failure reasons
TRITON_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)
RECENT = 4096  # latencies kept for the recent percentiles
VERSION = "1"


def failure_reason(error: BaseException) -> str:
    """Triton's reason label for a failed request: ``REJECTED`` (refused: the queue was full),
    ``CANCELED`` (the caller cancelled or went away), ``BACKEND`` (a backend raised, its worker
    died or hung) or ``OTHER`` (deadline passed, bad input, shutting down...)."""
    if isinstance(error, Overloaded):
        return "REJECTED"
    if isinstance(error, (FutureCancelled, asyncio.CancelledError)):
        return "CANCELED"
    if isinstance(error, (BackendError, ComputeTimeout)):
        return "BACKEND"
    return "OTHER"


@dataclass(frozen=True)
class TallySnapshot:
    """A :class:`RequestTally` as of one moment.

    Attributes:
        success, success_seconds: requests that succeeded and their total latency.
        failures: per reason (:func:`failure_reason`), requests that failed and their total time.
        errors: failed requests per error class name.
        items: items in the requests that succeeded (a request with a batch of 4 counts 4).
        buckets: cumulative counts of all requests' latencies at or below each of
            :data:`LATENCY_BUCKETS`; total: all requests; total_seconds: their latencies summed.
        pending: requests admitted without an outcome yet; last_ms: when the last one succeeded
            (milliseconds since the epoch, 0: never).
    """

    success: int
    success_seconds: float
    failures: Mapping[str, tuple[int, float]]
    errors: Mapping[str, int]
    items: int
    buckets: tuple[int, ...]
    total: int
    total_seconds: float
    pending: int
    last_ms: int

    @property
    def fail(self) -> int:
        """Requests that failed, for every reason."""
        return sum(count for count, _ in self.failures.values())

    @property
    def fail_seconds(self) -> float:
        """Total time of the requests that failed."""
        return sum(seconds for _, seconds in self.failures.values())


class RequestTally:
    """One model's request counts and latencies.

    Args:
        shared: recorded from several threads (a pipe's observer): each record takes a short
            lock. A tally recorded from one thread only (the server's event loop) leaves it out:
            readers on other threads then copy each figure at once (C-level copies, atomic under
            the GIL), so a snapshot taken while requests finish may be off by the request
            finishing then, never corrupt.
    """

    def __init__(self, *, shared: bool = True) -> None:
        self._lock: Any = threading.Lock() if shared else contextlib.nullcontext()
        self._success = 0
        self._success_seconds = 0.0
        self._failures: dict[str, list[float]] = {}
        self._errors: dict[str, int] = {}
        self._items = 0
        self._counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._failed_seconds = 0.0
        self._last = 0.0  # monotonic reading of the last success (0: none)
        self._epoch = time.time() - time.monotonic()
        self._recent: deque[float] = deque(maxlen=RECENT)  # the last requests' latencies
        # Pending requests of a source that counts its own: C-level counters, as the pipe's
        # in-flight count (no lock, no Python frame on the request's path).
        self._entered = itertools.count()
        self._left = itertools.count()
        self.admitted: Callable[[], object] = self._entered.__next__
        """One request was admitted (a source counting its own; its outcome is :meth:`served`
        or :meth:`failed`)."""
        if not shared:
            self.record = self._record  # type: ignore[method-assign]
        else:
            self.served = self._served_locked  # type: ignore[method-assign]

    def served(self, seconds: float, items: int) -> None:
        """An admitted request of ``items`` items succeeded after ``seconds`` (the server's path:
        one thread, positional arguments, no lock)."""
        next(self._left)
        self._counts[_bucket(LATENCY_BUCKETS, seconds)] += 1
        self._recent.append(seconds)
        self._success += 1
        self._success_seconds += seconds
        self._items += items
        self._last = _now()

    def _served_locked(self, seconds: float, items: int) -> None:
        with self._lock:
            RequestTally.served(self, seconds, items)

    def failed(self, seconds: float, error: BaseException) -> None:
        """An admitted request failed after ``seconds`` with ``error``."""
        next(self._left)
        self.record(seconds, error)

    def record(self, seconds: float, error: BaseException | None = None, items: int = 1) -> None:
        """One request's outcome after ``seconds``: None on success, else its error."""
        with self._lock:
            self._record(seconds, error, items)

    def _record(self, seconds: float, error: BaseException | None = None, items: int = 1) -> None:
        self._counts[_bucket(LATENCY_BUCKETS, seconds)] += 1
        self._recent.append(seconds)
        if error is None:
            self._success += 1
            self._success_seconds += seconds
            self._items += items
            self._last = _now()
            return
        self._failed_seconds += seconds
        entry = self._failures.setdefault(failure_reason(error), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        name = type(error).__name__
        self._errors[name] = self._errors.get(name, 0) + 1

    def observer(self, entry: str, seconds: float, error: BaseException | None) -> None:
        """A :data:`pipeserve.Observer` recording every request of a pipe."""
        self.record(seconds, error)

    def snapshot(self) -> TallySnapshot:
        """The counts as of now."""
        with self._lock:
            counts = list(self._counts)
            failures = {reason: (int(c), s) for reason, (c, s) in list(self._failures.items())}
            snapshot = TallySnapshot(
                success=self._success,
                success_seconds=self._success_seconds,
                failures=failures,
                errors=dict(self._errors),
                items=self._items,
                buckets=(),
                total=sum(counts),
                total_seconds=self._success_seconds + self._failed_seconds,
                pending=_peek(self._entered) - _peek(self._left),
                last_ms=self._last_ms(),
            )
        cumulative, running = [], 0
        for count in counts[:-1]:
            running += count
            cumulative.append(running)
        return replace(snapshot, buckets=tuple(cumulative))

    def _last_ms(self) -> int:
        """When the last success was, in milliseconds since the epoch (0: none yet)."""
        last = self._last
        return int(1000 * (self._epoch + last)) if last else 0

    def recent_percentiles(self, quantiles: Iterable[float] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
        """Latency percentiles (milliseconds) of the last :data:`RECENT` requests with an
        outcome, how many there were, and when the last success was (``last_ms``)."""
        with self._lock:
            kept = sorted(self._recent)
        found: dict[str, Any] = {"count": len(kept), "last_ms": self._last_ms()}
        for q in quantiles:
            key = f"p{round(q * 100, 1):g}"
            found[key] = 1e3 * kept[min(len(kept) - 1, int(q * len(kept)))] if kept else None
        return found


_bucket = bisect.bisect_left
_now = time.monotonic


def _peek(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would give, without taking it."""
    return int(repr(counter)[len("count(") : -1] or 0)


def charge(statistics: Mapping[str, NodeStatistics], entry: str) -> tuple[float, float]:
    """Seconds of queueing and of compute per request in all, as Triton charges a model's: each
    node's batch time to every request in the batch, its queue wait once per request; a node that
    sees several items per request (MapReduce lines) is scaled down by that fan-out, so that a
    request's lines, batched together, count their batch once. Returns ``(queue, compute)``
    summed over every request so far."""
    requests = max(1, statistics[entry].items) if entry in statistics else 1
    queue_s = compute_s = 0.0
    for node in statistics.values():
        fanout = max(1.0, node.items / requests)
        queue_s += node.queue_seconds / fanout
        compute_s += node.compute_seconds * node.mean_batch_size / fanout
    return queue_s, compute_s


def model_counters(
    name: str,
    pipe: Pipe,
    snapshot: TallySnapshot,
    entry: str | None = None,
    statistics: Mapping[str, NodeStatistics] | None = None,
) -> oip.ModelCounters:
    """Triton's statistics of a model served by ``pipe`` (its default entry unless ``entry``):
    requests from the tally, queue and compute from the pipe's statistics (:func:`charge`), or
    from ``statistics`` when the caller has taken them already."""
    entry = entry or pipe.entries[0]
    statistics = pipe.statistics() if statistics is None else statistics
    queue_s, compute_s = charge(statistics, entry)
    node = statistics.get(entry)
    batches: dict[int, oip.Duration] = {}
    if node is not None:
        per_batch_ns = int(1e6 * node.mean_compute_ms)
        batches = {size: oip.Duration(count, count * per_batch_ns) for size, count in node.batch_sizes.items()}
    return oip.ModelCounters(
        name=name,
        version=VERSION,
        success=oip.Duration(snapshot.success, int(snapshot.success_seconds * 1e9)),
        fail=oip.Duration(snapshot.fail, int(snapshot.fail_seconds * 1e9)),
        queue=oip.Duration(snapshot.success, int(queue_s * 1e9)),
        compute=oip.Duration(snapshot.success, int(compute_s * 1e9)),
        inference_count=snapshot.items,
        execution_count=node.batches if node is not None else 0,
        last_inference_ms=snapshot.last_ms,
        batches=batches,
    )


# The CPU budget's families (NOTE [elastic budget]): name, gauge or counter, help, the field of
# BudgetStatistics it shows.
_BUDGET_FAMILIES = (
    ("pipeserve_cpu_budget_cores", "gauge", "Cores the CPU budget divides", "cores"),
    ("pipeserve_cpu_budget_slots", "gauge", "Computing instances in the CPU budget", "slots"),
    ("pipeserve_cpu_budget_busy", "gauge", "Cores the running batches hold now", "busy"),
    ("pipeserve_cpu_budget_grants", "counter", "Thread grants to elastic calls", "grants"),
    ("pipeserve_cpu_budget_widened", "counter", "Grants above the fair share (idle cores taken)", "widened"),
)


def _budget_families(budgets: Iterable[Any], gauge: Any, counter: Any) -> list[Any]:
    """The budget families, one sample per budget (labelled ``0``, ``1``... in the order given;
    usually the process's one)."""
    families = [
        (gauge if kind == "gauge" else counter)(name, doc, labels=["budget"]) for name, kind, doc, _ in _BUDGET_FAMILIES
    ]
    for index, budget in enumerate(budgets):
        figures = budget.statistics()
        for family, (_, _, _, field) in zip(families, _BUDGET_FAMILIES, strict=True):
            family.add_metric([str(index)], getattr(figures, field))
    return families


@dataclass(frozen=True)
class WatchedModel:
    """A model whose metrics a :class:`PipeCollector` exports.

    Attributes:
        name: the ``model`` label; pipe: the pipe serving it; tally: its request counts.
        entry: the entry its requests start at (None: the pipe's default).
        pending: requests without an outcome (None: the tally's own count, else the pipe's).
    """

    name: str
    pipe: Pipe
    tally: RequestTally
    entry: str | None = None
    pending: Callable[[], int] | None = None


class PipeCollector:
    """A ``prometheus_client`` collector building every family at scrape time from the models
    that ``models()`` returns then (NOTE [metric sources])."""

    def __init__(self, models: Callable[[], Iterable[WatchedModel]]) -> None:
        self._models = models

    def describe(self) -> list[Any]:
        """Nothing up front: the families depend on the models loaded (prometheus_client then
        skips its own collect-time check on registration)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The families, one sample per model (and node, instance) loaded now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

        def triton_counter(name: str, doc: str) -> Any:
            # Triton's counters carry no ``_total`` suffix, which prometheus_client writes only for
            # untyped families; :func:`exposition` declares them counters, as Triton does.
            return Metric(name, doc, "unknown")

        success = triton_counter("nv_inference_request_success", "Number of successful inference requests")
        failure = triton_counter("nv_inference_request_failure", "Number of failed inference requests, by reason")
        count = triton_counter("nv_inference_count", "Number of inferences performed (items, batch included)")
        executions = triton_counter("nv_inference_exec_count", "Number of batches run by the model's entry node")
        request_us = triton_counter("nv_inference_request_duration_us", "Cumulative request duration in microseconds")
        queue_us = triton_counter("nv_inference_queue_duration_us", "Cumulative time requests spent queued, in us")
        compute_us = triton_counter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time charged to requests, in microseconds"
        )
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Requests admitted without an outcome yet",
            labels=["model", "version"],
        )
        latency = HistogramMetricFamily(
            "pipeserve_request_duration_seconds", "Request latency, arrival to outcome", labels=["model"]
        )
        errors = CounterMetricFamily(
            "pipeserve_request_failures", "Failed requests by error class", labels=["model", "error"]
        )
        node_labels = ["model", "node"]
        arrived = CounterMetricFamily("pipeserve_node_arrived_items", "Items that reached the node", labels=node_labels)
        items = CounterMetricFamily("pipeserve_node_items", "Items run in batches", labels=node_labels)
        batches = CounterMetricFamily("pipeserve_node_batches", "Batches run", labels=node_labels)
        sizes = HistogramMetricFamily("pipeserve_node_batch_size", "Items per batch", labels=node_labels)
        releases = CounterMetricFamily(
            "pipeserve_node_batch_releases", "Batches released, by reason", labels=[*node_labels, "reason"]
        )
        inline = CounterMetricFamily(
            "pipeserve_node_inline_batches", "Batches run on a caller's thread", labels=node_labels
        )
        depth = GaugeMetricFamily("pipeserve_node_queue_depth", "Items waiting in the node's queue", labels=node_labels)
        running = GaugeMetricFamily("pipeserve_node_running_items", "Items in batches running now", labels=node_labels)
        queue_s = CounterMetricFamily(
            "pipeserve_node_queue_seconds", "Time items waited in the queue", labels=node_labels
        )
        compute_s = CounterMetricFamily(
            "pipeserve_node_compute_seconds", "Time instances spent computing", labels=node_labels
        )
        failed = CounterMetricFamily("pipeserve_node_errors", "Items that failed in a backend", labels=node_labels)
        expired = CounterMetricFamily(
            "pipeserve_node_expired", "Items whose deadline passed in the queue", labels=node_labels
        )
        rejected = CounterMetricFamily(
            "pipeserve_node_rejected", "Items refused: the queue was full", labels=node_labels
        )
        cancelled = CounterMetricFamily(
            "pipeserve_node_cancelled", "Items dropped: their request was cancelled or had finished", labels=node_labels
        )
        timed_out = CounterMetricFamily(
            "pipeserve_node_timed_out", "Batches given up after compute_timeout", labels=node_labels
        )
        abandoned = GaugeMetricFamily(
            "pipeserve_node_abandoned_instances", "Thread instances abandoned with a hung batch", labels=node_labels
        )
        instances = GaugeMetricFamily("pipeserve_node_instances", "Instances by state", labels=[*node_labels, "state"])
        # Not ``instance``: Prometheus gives every scraped series that label (the target).
        instance_labels = [*node_labels, "instance_index"]
        busy = CounterMetricFamily(
            "pipeserve_instance_busy_seconds", "Instance time in forward", labels=instance_labels
        )
        instance_batches = CounterMetricFamily(
            "pipeserve_instance_batches", "Batches an instance ran", labels=instance_labels
        )

        budgets: dict[int, Any] = {}
        watched = list(self._models())

        for model in watched:
            budgets.setdefault(id(model.pipe.budget), model.pipe.budget)
            snap = model.tally.snapshot()
            statistics = model.pipe.statistics()  # one snapshot for Triton's figures and the nodes'
            counters = model_counters(model.name, model.pipe, snap, model.entry, statistics)
            labels = {"model": model.name, "version": VERSION}
            success.add_sample("nv_inference_request_success", labels, snap.success)
            for reason in REASONS:
                failed_count = snap.failures.get(reason, (0, 0.0))[0]
                failure.add_sample("nv_inference_request_failure", {**labels, "reason": reason}, failed_count)
            count.add_sample("nv_inference_count", labels, snap.items)
            executions.add_sample("nv_inference_exec_count", labels, counters.execution_count)
            request_us.add_sample(
                "nv_inference_request_duration_us", labels, (snap.success_seconds + snap.fail_seconds) * 1e6
            )
            queue_us.add_sample("nv_inference_queue_duration_us", labels, counters.queue.ns / 1e3)
            compute_us.add_sample("nv_inference_compute_infer_duration_us", labels, counters.compute.ns / 1e3)
            waiting = model.pending() if model.pending is not None else snap.pending
            pending.add_metric([model.name, VERSION], waiting)
            latency.add_metric(
                [model.name],
                [*((_bound(b), c) for b, c in zip(LATENCY_BUCKETS, snap.buckets, strict=True)), ("+Inf", snap.total)],
                snap.total_seconds,
            )
            for name, failed_count in sorted(snap.errors.items()):
                errors.add_metric([model.name, name], failed_count)
            for node_name, node in statistics.items():
                at = [model.name, node_name]
                arrived.add_metric(at, node.arrived)
                items.add_metric(at, node.items)
                batches.add_metric(at, node.batches)
                sizes.add_metric(at, _batch_buckets(node.batch_sizes), node.items)
                for reason, released in sorted(node.release_reasons.items()):
                    releases.add_metric([*at, reason], released)
                inline.add_metric(at, node.inline)
                depth.add_metric(at, node.queued)
                running.add_metric(at, node.running)
                queue_s.add_metric(at, node.queue_seconds)
                compute_s.add_metric(at, node.compute_seconds)
                failed.add_metric(at, node.errors)
                expired.add_metric(at, node.expired)
                rejected.add_metric(at, node.rejected)
                cancelled.add_metric(at, node.dropped)
                timed_out.add_metric(at, node.timed_out)
                abandoned.add_metric(at, node.abandoned)
                states: dict[str, int] = {}
                for instance in node.instances:
                    states[instance.state] = states.get(instance.state, 0) + 1
                    busy.add_metric([*at, str(instance.index)], instance.compute_seconds)
                    instance_batches.add_metric([*at, str(instance.index)], instance.batches)
                for state, number in sorted(states.items()):
                    instances.add_metric([*at, state], number)
        yield from (success, failure, count, executions, request_us, queue_us, compute_us, pending, latency, errors)
        yield from (arrived, items, batches, sizes, releases, inline, depth, running, queue_s, compute_s)
        yield from (failed, expired, rejected, cancelled, timed_out, abandoned, instances, busy, instance_batches)
        yield from _budget_families(budgets.values(), GaugeMetricFamily, CounterMetricFamily)
        yield from _knob_families(watched, GaugeMetricFamily, CounterMetricFamily)


def _knob_families(models: list[WatchedModel], gauge: Any, counter: Any) -> list[Any]:
    """Each node's batch max, window and active instances now, and the autotuner's decisions
    (NOTE [autotune]): what changed them and when shows in these series."""
    node_labels = ["model", "node"]
    batch_max = gauge("pipeserve_node_batch_max", "The largest batch the node runs now", labels=node_labels)
    window = gauge("pipeserve_node_batching_window_seconds", "The node's batching window now", labels=node_labels)
    active = gauge("pipeserve_node_active_instances", "Instances taking batches now", labels=node_labels)
    decisions = counter(
        "pipeserve_autotune_decisions", "Autotune changes, keeps and reverts, by node", labels=[*node_labels, "kind"]
    )
    frozen = gauge("pipeserve_autotune_frozen", "1 while the model's autotuner is frozen", labels=["model"])
    target = gauge("pipeserve_autotune_target_p99_seconds", "The autotuner's p99 target", labels=["model"])
    for model in models:
        for name, node in model.pipe.describe().nodes.items():
            batch_max.add_metric([model.name, name], node.batch_range[1])
            window.add_metric([model.name, name], node.batching_timeout_ms / 1e3)
            active.add_metric([model.name, name], node.active_instances)
        tuner = model.pipe.autotune
        if tuner is not None:
            counts = tuner.counts()
            for node_name in tuner.space.tuned():  # every series from zero, as counters should
                for kind in ("change", "keep", "revert"):
                    decisions.add_metric([model.name, node_name, kind], counts.get((node_name, kind), 0))
            frozen.add_metric([model.name], 1.0 if tuner.frozen else 0.0)
            target.add_metric([model.name], tuner.settings.p99_ms / 1e3)
    return [batch_max, window, active, decisions, frozen, target]


def _bound(value: float) -> str:
    return repr(float(value))


def _batch_buckets(batch_sizes: Mapping[int, int]) -> list[tuple[str, float]]:
    """Cumulative bucket counts of a node's batch-size tally over :data:`BATCH_BUCKETS`."""
    total = sum(batch_sizes.values())
    buckets = []
    for bound in BATCH_BUCKETS:
        buckets.append((_bound(bound), float(sum(c for size, c in batch_sizes.items() if size <= bound))))
    buckets.append(("+Inf", float(total)))
    return buckets


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependencyError("metrics need prometheus-client: pip install 'pipeserve[metrics]'") from exc
    return prometheus_client


def register(pipe: Pipe, *, model: str = "pipe", entry: str | None = None, registry: Any = None) -> WatchedModel:
    """Export ``pipe``'s metrics as model ``model`` in ``registry`` (default: prometheus_client's
    global ``REGISTRY``): the same families ``pipeserve serve`` exports, each request of the pipe
    counted from now on (an observer records it, NOTE [metric sources]). Several pipes may be
    registered in one registry, under different model names: one collector there exports them all.

    Returns:
        what is exported (pass it to :func:`unregister` to stop).

    Raises:
        MissingDependencyError: prometheus-client is not installed.
        ValueError: ``model`` is already registered in ``registry``.
    """
    prometheus_client = _prometheus()
    registry = registry if registry is not None else prometheus_client.REGISTRY
    tally = RequestTally()
    watched = WatchedModel(model, pipe, tally, entry, pending=lambda: pipe.pending)
    with _registered_lock:
        shared = _registries.get(id(registry))
        if shared is None:
            models: dict[str, WatchedModel] = {}
            collector = PipeCollector(lambda: tuple(models.values()))
            registry.register(collector)
            shared = _registries[id(registry)] = (registry, collector, models)
        if model in shared[2]:
            raise ValueError(f"a model named {model!r} is already registered in this registry")
        shared[2][model] = watched
        _registered[id(watched)] = id(registry)
    pipe.add_observer(tally.observer)
    return watched


# Per registry (by id): the registry, its one collector, and the models it exports.
_registries: dict[int, tuple[Any, PipeCollector, dict[str, WatchedModel]]] = {}
_registered: dict[int, int] = {}  # a registered WatchedModel's id -> its registry's id
_registered_lock = threading.Lock()


def unregister(watched: WatchedModel) -> None:
    """Stop exporting what :func:`register` returned: its families leave the registry and the
    pipe's requests are no longer counted. Idempotent."""
    with _registered_lock:
        registry_id = _registered.pop(id(watched), None)
        if registry_id is None:
            return
        registry, collector, models = _registries[registry_id]
        models.pop(watched.name, None)
        if not models:
            registry.unregister(collector)
            del _registries[registry_id]
    watched.pipe.remove_observer(watched.tally.observer)


def server_registry(models: Callable[[], Iterable[WatchedModel]]) -> Any:
    """A fresh registry for a server: its models' families plus the process's own (CPU, memory,
    open files, garbage collection), as ``prometheus_client`` reports them."""
    prometheus_client = _prometheus()
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(PipeCollector(models))
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    return registry


def exposition(registry: Any) -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type, Triton's counters declared
    ``counter`` under Triton's names (prometheus_client's own writers declare them untyped, as a
    counter's samples there must end in ``_total``)."""
    prometheus_client = _prometheus()
    text = prometheus_client.generate_latest(registry)
    for name in TRITON_COUNTERS:
        raw = name.encode()
        text = text.replace(b"# TYPE " + raw + b" untyped\n", b"# TYPE " + raw + b" counter\n", 1)
    return text, prometheus_client.CONTENT_TYPE_LATEST
