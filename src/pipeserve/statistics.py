"""Statistics and health: counters kept under a node's lock, read as frozen snapshots.

:class:`NodeStats` is the mutable tally a node keeps; :class:`NodeStatistics` is what readers get
(``Pipe.statistics()``), typed and frozen, with :meth:`NodeStatistics.as_dict` as the plain-data
view (``Pipe.stats()``). :class:`Health` is what ``Pipe.health()`` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .instance import Instance

__all__ = ["Health", "InstanceHealth", "InstanceStatistics", "NodeHealth", "NodeStatistics", "NodeStats"]

CHEAP_AFTER = 20  # batches measured before a node may be judged cheap
CHEAP_BELOW = 0.00005  # seconds: a batch cheaper than this costs less than a thread hand-off


@dataclass
class NodeStats:
    """Counters of one node. Mutated only under the node's lock (see :class:`NodeStatistics`
    for what each means)."""

    arrived: int = 0
    batches: int = 0
    items: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    inline: int = 0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    size_seconds: dict[int, float] = field(default_factory=dict)
    errors: int = 0
    expired: int = 0
    dropped: int = 0
    rejected: int = 0
    timed_out: int = 0
    abandoned: int = 0

    def record_release(self, size: int, reason: str, waited: float, *, inline: bool = False) -> None:
        """Count one released batch of ``size`` items whose waits add up to ``waited`` seconds."""
        self.batches += 1
        self.items += size
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.queue_seconds += waited
        self.inline += inline

    def record_compute(self, size: int, seconds: float) -> None:
        """Count ``seconds`` in ``forward`` for one finished batch of ``size`` items."""
        self.compute_seconds += seconds
        self.size_seconds[size] = self.size_seconds.get(size, 0.0) + seconds

    def cheap(self) -> bool:
        """Whether a batch here costs less than a thread hand-off (NOTE [hand-off]): measured
        over at least ``CHEAP_AFTER`` batches, a mean below ``CHEAP_BELOW`` seconds."""
        return self.batches >= CHEAP_AFTER and self.compute_seconds < CHEAP_BELOW * self.batches

    def snapshot(self, node: str, *, queued: int, instances: tuple[InstanceStatistics, ...]) -> NodeStatistics:
        """A frozen copy, with the node's current queue and instances."""
        return NodeStatistics(
            node=node,
            queued=queued,
            running=sum(i.running for i in instances),
            arrived=self.arrived,
            batches=self.batches,
            items=self.items,
            batch_sizes=MappingProxyType(dict(sorted(self.batch_sizes.items()))),
            release_reasons=MappingProxyType(dict(self.reasons)),
            inline=self.inline,
            queue_seconds=self.queue_seconds,
            compute_seconds=self.compute_seconds,
            compute_by_size=MappingProxyType(dict(sorted(self.size_seconds.items()))),
            errors=self.errors,
            expired=self.expired,
            dropped=self.dropped,
            rejected=self.rejected,
            instances=instances,
            timed_out=self.timed_out,
            abandoned=self.abandoned,
        )


@dataclass(frozen=True)
class InstanceStatistics:
    """One instance, as of a snapshot.

    Attributes:
        index: its index in the node; group: its bucket group.
        state: ``starting``, ``idle``, ``assigned``, ``running``, ``borrowed`` or ``closed``.
        batches, items: what it ran so far (borrowed runs included).
        running: items in the batch it is running now.
        compute_seconds: its time in ``forward`` so far (its busy time; batches running now
            count once they end).
    """

    index: int
    group: int
    state: str
    batches: int
    items: int
    running: int
    compute_seconds: float = 0.0

    @classmethod
    def of(cls, instance: Instance) -> InstanceStatistics:
        """A snapshot of ``instance`` (requires its node's lock)."""
        return cls(
            instance.index,
            instance.group,
            instance.state.value,
            instance.batches,
            instance.items,
            len(instance.current or ()),
            instance.compute_seconds,
        )


@dataclass(frozen=True)
class NodeStatistics:
    """One node's statistics, as of a snapshot.

    Attributes:
        node: its name.
        queued: items waiting now; running: items in batches running now.
        arrived: items queued at the node (or run inline) so far.
        batches, items: batches released and the items in them.
        batch_sizes: how many batches had each size.
        release_reasons: how many batches were released for each reason (``full``,
            ``nothing_coming``, ``timeout``; NOTE [batch release]).
        inline: batches run on a caller's thread (NOTE [inline execution]).
        queue_seconds: total time items waited in the queue.
        compute_seconds: total time instances spent in ``forward``.
        compute_by_size: that time by batch size (batches that finished; with ``batch_sizes``,
            the cost of a batch as a function of its size, which the autotuner fits).
        errors: items that failed in a backend.
        expired: items dropped because their deadline passed while queued.
        dropped: items dropped because their request had finished or was cancelled.
        rejected: items refused because the queue was full.
        instances: one entry per instance (abandoned ones are not among them).
        timed_out: batches given up after ``compute_timeout`` (NOTE [hung backends]).
        abandoned: thread instances left running a hung batch, replaced by fresh ones.
    """

    node: str
    queued: int
    running: int
    arrived: int
    batches: int
    items: int
    batch_sizes: Mapping[int, int]
    release_reasons: Mapping[str, int]
    inline: int
    queue_seconds: float
    compute_seconds: float
    errors: int
    expired: int
    dropped: int
    rejected: int
    instances: tuple[InstanceStatistics, ...]
    timed_out: int = 0
    abandoned: int = 0
    compute_by_size: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def mean_batch_size(self) -> float:
        """Items per batch (0 before the first batch)."""
        return self.items / self.batches if self.batches else 0.0

    @property
    def mean_queue_ms(self) -> float:
        """Mean wait of an item in the queue, in milliseconds."""
        return 1e3 * self.queue_seconds / self.items if self.items else 0.0

    @property
    def mean_compute_ms(self) -> float:
        """Mean time of one batch in ``forward``, in milliseconds."""
        return 1e3 * self.compute_seconds / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain data, with the means derived (``Pipe.stats()``)."""
        return {
            "queued": self.queued,
            "running": self.running,
            "instances": len(self.instances),
            "arrived": self.arrived,
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": self.mean_batch_size,
            "batch_sizes": dict(self.batch_sizes),
            "release_reasons": dict(self.release_reasons),
            "inline": self.inline,
            "mean_queue_ms": self.mean_queue_ms,
            "mean_compute_ms": self.mean_compute_ms,
            "compute_seconds": self.compute_seconds,
            "errors": self.errors,
            "expired": self.expired,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
            "abandoned": self.abandoned,
        }


@dataclass(frozen=True)
class InstanceHealth:
    """One instance's health.

    Attributes:
        index: its index in the node; state: as in :class:`InstanceStatistics`.
        alive: its worker thread is running.
        broken: its worker ended while the pipe is open (it failed to start, or died).
        stuck: it has been running one batch for longer than the threshold asked.
        busy_seconds: how long its current batch has run (0 when none).
    """

    index: int
    state: str
    alive: bool
    broken: bool
    stuck: bool
    busy_seconds: float

    @classmethod
    def of(cls, instance: Instance, now: float, stuck_after: float, closed: bool) -> InstanceHealth:
        """The health of ``instance`` at clock reading ``now`` (requires its node's lock)."""
        alive = instance.thread is not None and instance.thread.is_alive()
        busy = now - instance.started if instance.current is not None else 0.0
        return cls(
            index=instance.index,
            state=instance.state.value,
            alive=alive,
            broken=not alive and not closed,
            stuck=alive and busy > stuck_after,
            busy_seconds=busy,
        )


@dataclass(frozen=True)
class NodeHealth:
    """One node's instances' health; ``ok`` when one at least is alive and none is broken or
    stuck. ``abandoned``: thread instances left running a hung batch (NOTE [hung backends]),
    each replaced by a fresh instance; reported, not counted against ``ok``."""

    node: str
    instances: tuple[InstanceHealth, ...]
    abandoned: int = 0

    @property
    def ok(self) -> bool:
        """An instance is alive and none is broken or stuck."""
        return any(i.alive for i in self.instances) and not any(i.broken or i.stuck for i in self.instances)


@dataclass(frozen=True)
class Health:
    """The pipe's health (``Pipe.health()``).

    Attributes:
        state: the pipe's state (``starting``, ``ready``, ``draining``, ``closed``).
        nodes: each scheduled node's health, by name.
    """

    state: str
    nodes: Mapping[str, NodeHealth]

    @property
    def ok(self) -> bool:
        """The pipe is ready and no instance is broken or stuck."""
        return self.state == "ready" and all(node.ok for node in self.nodes.values())
