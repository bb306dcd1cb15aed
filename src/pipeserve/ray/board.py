"""The figures of every replica of an application, gathered in one place and merged, so that the
ingress answers ``/metrics`` and Triton's statistics for the whole application, never for the
replica that happens to take the scrape.

NOTE [replica metrics]
Each replica reports a snapshot (its metric families as prometheus_client collected them, and
each served model's Triton counters) to the application's board every ``metrics_interval``
seconds; the replica answering a scrape puts its own, fresh, in place of its last report. The
merged ``/metrics`` carries every replica's samples, each labelled ``deployment`` and
``replica`` (aggregate with PromQL: ``sum by (model) (...)``); the parts leave out Triton's
request counters, which count the ingress's requests. ``/v2/models/stats`` sums the counters of
the ingress replicas. A replica that stopped reporting (three intervals, at least 10 s) drops
out: its counters leave with it, as a restarted process's would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import oip
from ..metrics import TRITON_COUNTERS, exposition

__all__ = ["Board", "ReplicaSnapshot", "merged_exposition", "sum_counters"]


@dataclass(frozen=True)
class ReplicaSnapshot:
    """What one replica reports.

    Attributes:
        replica: its unique id; deployment: its deployment's name; time: when it was taken
        (``time.time()``); families: its metric families (prometheus_client ``Metric``s);
        counters: Triton's counters of each model it serves requests for (empty for a part).
    """

    replica: str
    deployment: str
    time: float
    families: Sequence[Any] = ()
    counters: Sequence[oip.ModelCounters] = field(default_factory=tuple)


class Board:
    """The latest snapshot of each replica (what the board deployment keeps).

    Args:
        stale_after: seconds without a report after which a replica drops out.
    """

    def __init__(self, stale_after: float = 10.0) -> None:
        self.stale_after = stale_after
        self._snapshots: dict[str, ReplicaSnapshot] = {}

    def put(self, snapshot: ReplicaSnapshot) -> None:
        """Keep ``snapshot`` as its replica's latest (an older one arriving late is ignored)."""
        kept = self._snapshots.get(snapshot.replica)
        if kept is None or kept.time <= snapshot.time:
            self._snapshots[snapshot.replica] = snapshot

    def remove(self, replica: str) -> None:
        """Forget ``replica`` (it stopped)."""
        self._snapshots.pop(replica, None)

    def snapshots(self) -> list[ReplicaSnapshot]:
        """The live replicas' latest snapshots, by replica id."""
        cutoff = time.time() - self.stale_after
        for replica in [r for r, s in self._snapshots.items() if s.time < cutoff]:
            del self._snapshots[replica]
        return [self._snapshots[r] for r in sorted(self._snapshots)]


def merged_exposition(snapshots: Iterable[ReplicaSnapshot]) -> tuple[bytes, str]:
    """``/metrics`` of the whole application: every replica's samples, labelled with its
    deployment and replica, one family per name (NOTE [replica metrics])."""
    import prometheus_client
    from prometheus_client.core import Metric

    merged: dict[str, Any] = {}
    for snapshot in snapshots:
        extra = {"deployment": snapshot.deployment, "replica": snapshot.replica}
        for family in snapshot.families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                target.samples.append(sample._replace(labels={**sample.labels, **extra}))

    class Merged:
        def collect(self) -> Iterator[Any]:
            yield from merged.values()

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return exposition(registry)


def part_families(families: Iterable[Any]) -> list[Any]:
    """A part's families: all but Triton's request counters (NOTE [replica metrics])."""
    return [family for family in families if family.name not in TRITON_COUNTERS]


def sum_counters(name: str, counters: Iterable[oip.ModelCounters]) -> oip.ModelCounters:
    """Model ``name``'s counters over every replica that serves it (sums; the latest
    inference's time)."""
    total = oip.ModelCounters(name)
    batches: dict[int, oip.Duration] = {}
    for part in counters:
        if part.name != name:
            continue
        for size, duration in part.batches.items():
            batches[size] = _add(batches.get(size, oip.Duration()), duration)
        total = replace(
            total,
            version=part.version,
            success=_add(total.success, part.success),
            fail=_add(total.fail, part.fail),
            queue=_add(total.queue, part.queue),
            compute=_add(total.compute, part.compute),
            inference_count=total.inference_count + part.inference_count,
            execution_count=total.execution_count + part.execution_count,
            last_inference_ms=max(total.last_inference_ms, part.last_inference_ms),
        )
    return replace(total, batches=dict(sorted(batches.items())))


def _add(a: oip.Duration, b: oip.Duration) -> oip.Duration:
    return oip.Duration(a.count + b.count, a.ns + b.ns)
