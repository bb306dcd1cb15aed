"""What the tuner sees: a :class:`Sample` of a pipe over an interval, from two statistics
snapshots and the latencies of the requests that ended in between.

Samples are plain data, so the tuner's decisions are a function of them alone: the same samples
from a real pipe, a load test or a simulation lead to the same decisions (the tests drive the
tuner with a simulated pipeline and a clock of their own).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from .space import Knobs

if TYPE_CHECKING:
    from ..statistics import NodeStatistics

__all__ = ["LatencyRecorder", "NodeSample", "Sample", "quantile"]


def quantile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted values (nearest rank); 0 when there are none."""
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class NodeSample:
    """One node over an interval.

    Attributes:
        knobs: its knobs during the interval.
        arrived: items that reached it; items, batches: released to its instances.
        busy_seconds: its instances' time in ``forward``.
        queue_seconds: its items' summed wait in the queue.
        sizes: per batch size, (batches released, seconds in ``forward`` of those finished).
        reasons: batches released by reason (``full``, ``timeout``, ``nothing_coming``).
        queued: items waiting at the end of the interval.
    """

    knobs: Knobs
    arrived: int = 0
    items: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    queue_seconds: float = 0.0
    sizes: Mapping[int, tuple[int, float]] = field(default_factory=lambda: MappingProxyType({}))
    reasons: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    queued: int = 0

    def utilisation(self, seconds: float) -> float:
        """The share of its active instances' time spent computing (0..1)."""
        return min(1.0, self.busy_seconds / (self.knobs.instances * seconds)) if seconds > 0 else 0.0

    def share(self, reason: str) -> float:
        """The share of its batches released for ``reason``."""
        total = sum(self.reasons.values())
        return self.reasons.get(reason, 0) / total if total else 0.0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    @property
    def mean_queue_ms(self) -> float:
        return 1e3 * self.queue_seconds / self.items if self.items else 0.0


@dataclass(frozen=True)
class Sample:
    """A pipe over an interval of ``seconds``: requests ``completed`` (and ``failed``), their
    latency quantiles, and each tuned node's :class:`NodeSample`."""

    seconds: float
    completed: int
    failed: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    nodes: Mapping[str, NodeSample]

    @property
    def throughput(self) -> float:
        """Requests completed per second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def concurrency(self) -> float:
        """Requests in flight on average (Little's law: throughput x mean latency)."""
        return self.throughput * self.mean_ms / 1e3

    @classmethod
    def between(
        cls,
        before: Mapping[str, NodeStatistics],
        after: Mapping[str, NodeStatistics],
        knobs: Mapping[str, Knobs],
        latencies: Sequence[float],
        seconds: float,
        failed: int = 0,
    ) -> Sample:
        """The sample of the interval between two ``Pipe.statistics()`` snapshots, for the nodes
        in ``knobs``, with the latencies (seconds) of the requests that succeeded in it."""
        nodes = {}
        for name, now in after.items():
            if name not in knobs:
                continue
            then = before.get(name)
            sizes = {}
            for size, count in now.batch_sizes.items():
                released = count - (then.batch_sizes.get(size, 0) if then else 0)
                spent = now.compute_by_size.get(size, 0.0) - (then.compute_by_size.get(size, 0.0) if then else 0.0)
                if released > 0 and spent > 0:
                    sizes[size] = (released, spent)
            reasons = {
                reason: count - (then.release_reasons.get(reason, 0) if then else 0)
                for reason, count in now.release_reasons.items()
            }
            nodes[name] = NodeSample(
                knobs=knobs[name],
                arrived=now.arrived - (then.arrived if then else 0),
                items=now.items - (then.items if then else 0),
                batches=now.batches - (then.batches if then else 0),
                busy_seconds=now.compute_seconds - (then.compute_seconds if then else 0.0),
                queue_seconds=now.queue_seconds - (then.queue_seconds if then else 0.0),
                sizes=MappingProxyType(sizes),
                reasons=MappingProxyType({r: c for r, c in reasons.items() if c > 0}),
                queued=now.queued,
            )
        return cls.of(latencies, seconds, nodes, failed)

    @classmethod
    def of(cls, latencies: Sequence[float], seconds: float, nodes: Mapping[str, NodeSample], failed: int = 0) -> Sample:
        """A sample from request latencies (seconds) and node samples."""
        ordered = sorted(latencies)
        return cls(
            seconds=seconds,
            completed=len(ordered),
            failed=failed,
            p50_ms=1e3 * quantile(ordered, 0.50),
            p99_ms=1e3 * quantile(ordered, 0.99),
            mean_ms=1e3 * sum(ordered) / len(ordered) if ordered else 0.0,
            nodes=MappingProxyType(dict(nodes)),
        )


class LatencyRecorder:
    """A pipe observer (``Pipe.add_observer``) that keeps the latencies of the requests ending
    between two :meth:`take` calls, and counts failures. Thread-safe."""

    def __init__(self, entry: str | None = None) -> None:
        self.entry = entry
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self._failed = 0

    def __call__(self, entry: str, seconds: float, error: BaseException | None) -> None:
        if self.entry is not None and entry != self.entry:
            return
        with self._lock:
            if error is None:
                self._latencies.append(seconds)
            else:
                self._failed += 1

    def take(self) -> tuple[list[float], int]:
        """The latencies (seconds) of the requests that succeeded since the last call, and how
        many failed; both start again from none."""
        with self._lock:
            taken, failed = self._latencies, self._failed
            self._latencies, self._failed = [], 0
        return taken, failed
