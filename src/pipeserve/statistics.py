"""Per-node statistics: counters kept under the node's lock, read as JSON-friendly snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeStats"]


@dataclass
class NodeStats:
    """Counters of one node. Mutated only under the node's lock.

    Attributes:
        arrived: items queued at the node.
        batches: batches released.
        items: items released in those batches.
        batch_sizes: how many batches had each size.
        reasons: how many batches were released for each reason (``full``, ``nothing_coming``,
            ``timeout``; see NOTE [batch release]).
        inline: batches run on the caller's thread (NOTE [inline execution]).
        queue_seconds: total time items waited in the queue.
        compute_seconds: total time instances spent in ``forward``.
        errors: items that failed in a backend.
        expired: items dropped because their deadline passed while queued.
        dropped: items dropped because their request had already finished or was cancelled.
        rejected: items refused because the queue was full.
    """

    arrived: int = 0
    batches: int = 0
    items: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    inline: int = 0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    errors: int = 0
    expired: int = 0
    dropped: int = 0
    rejected: int = 0

    def record_release(self, size: int, reason: str, waited: float, *, inline: bool = False) -> None:
        """Count one released batch of ``size`` items whose waits add up to ``waited`` seconds."""
        self.batches += 1
        self.items += size
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self.queue_seconds += waited
        self.inline += inline

    def snapshot(self, *, queued: int, running: int, instances: int) -> dict[str, Any]:
        """A copy as plain data, with means derived."""
        return {
            "queued": queued,
            "running": running,
            "instances": instances,
            "arrived": self.arrived,
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": self.items / self.batches if self.batches else 0.0,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "release_reasons": dict(self.reasons),
            "inline": self.inline,
            "mean_queue_ms": 1e3 * self.queue_seconds / self.items if self.items else 0.0,
            "mean_compute_ms": 1e3 * self.compute_seconds / self.batches if self.batches else 0.0,
            "compute_seconds": self.compute_seconds,
            "errors": self.errors,
            "expired": self.expired,
            "dropped": self.dropped,
            "rejected": self.rejected,
        }
