"""Batch formation: the queue of one node and the pure policy that decides when to release.

NOTE [batch release]
An idle instance asks :func:`decide` what to do with the queue. A batch is released

1. ``full``: some bucket holds at least the instance's ``max`` items;
2. ``nothing_coming``: no item is in flight upstream of the node, so waiting cannot make the
   batch larger, only later. At a root node this is always so: callers that are blocked in the
   pipe cannot send more, and an instance that is busy lets items accumulate anyway, which is how
   batches grow under load. This is the "never waits for requests that cannot come" rule and
   makes a lone request run at once;
3. ``timeout``: the oldest queued item has waited ``batching_timeout``;

otherwise the instance waits until the oldest item's window closes or something changes. The
policy is a pure function of a snapshot, so tests drive it with any clock they like.

Inside the queue, items are kept per *bucket* (items of different buckets never share a batch),
ordered by priority (``_priority``, higher first) then arrival. A batch is taken from the bucket
whose head is most urgent; with a sort score (``_sort_score``), the head's nearest neighbours by
score join it, so similar items (text lines of similar width, say) are batched together while
the oldest item still goes first.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config import get_float, get_list
from .tracing import Trace

__all__ = ["BatchQueue", "Bucketing", "Decision", "OnDone", "RequestLike", "Task", "decide"]

Item = dict[str, Any]


class RequestLike(Protocol):
    """What a node asks of the request a task belongs to (a :class:`~pipeserve.request.Request`,
    or a graph walk standing for one)."""

    @property
    def finished(self) -> bool:
        """True once the request has an outcome (or was cancelled): its tasks are dropped."""

    @property
    def deadline(self) -> float | None:
        """The clock reading after which the request fails, or None."""

    def expired(self, now: float) -> bool:
        """Whether the deadline has passed at clock reading ``now``."""

    def fail(self, error: BaseException) -> bool:
        """Deliver ``error`` as the request's outcome (False if it already had one)."""

    @property
    def trace(self) -> Trace | None:
        """The request's trace when it is sampled (NOTE [traces] in :mod:`pipeserve.tracing`)."""

    @property
    def span(self) -> int:
        """The span the request's node visits are children of (when traced)."""


OnDone = Callable[["Task", "BaseException | None"], None]


class Task:
    """One item waiting at (or running in) one node.

    Attributes:
        item: the dict the backend will see.
        request: the owning request.
        on_done: called once with ``(task, error_or_None)`` when the node is done with it.
        enqueued: the clock reading when it was queued.
        priority: higher runs first within a bucket.
        bucket: items of different buckets are never batched together.
        score: the sort score, or None.
    """

    __slots__ = ("bucket", "enqueued", "item", "on_done", "priority", "request", "score", "seq", "tag")

    def __init__(
        self,
        item: Item,
        request: RequestLike,
        on_done: OnDone,
        *,
        priority: int = 0,
        bucket: Hashable = None,
        score: float | None = None,
    ) -> None:
        self.item = item
        self.request = request
        self.on_done = on_done
        self.priority = priority
        self.bucket = bucket
        self.score = score
        self.enqueued = 0.0
        self.seq = 0
        self.tag: str = ""  # the graph node (logical name) the task belongs to

    def sort_key(self) -> tuple[int, int]:
        """Most urgent first: higher priority, then earlier arrival."""
        return (-self.priority, self.seq)


@dataclass(frozen=True)
class Decision:
    """What an idle instance should do.

    Attributes:
        take: how many items to take now (0: wait).
        bucket: the bucket to take them from.
        reason: ``full``, ``nothing_coming`` or ``timeout`` when taking.
        wait: seconds to wait before asking again (None: until something changes).
    """

    take: int = 0
    bucket: Hashable = None
    reason: str = ""
    wait: float | None = None


WAIT_FOR_CHANGE = Decision()
_NO_BUCKET: Any = object()


def decide(
    queue: BatchQueue,
    now: float,
    *,
    max_batch: int,
    min_batch: int = 1,
    timeout: float,
    upstream: int,
) -> Decision:
    """Decide for one idle instance accepting ``min_batch..max_batch`` items.

    Args:
        queue: the node's queue (only read).
        now: the current clock reading.
        timeout: the batching window in seconds, measured from the oldest queued item.
        upstream: how many items are in flight upstream and may still arrive.
    """
    if not queue.size:
        return WAIT_FOR_CHANGE
    if queue.single_bucket is not _NO_BUCKET:  # the common case, without per-bucket scans
        size = queue.size
        bucket = queue.single_bucket
        if size >= max_batch:
            return Decision(max_batch, bucket, "full")
        if size < min_batch:
            return WAIT_FOR_CHANGE
        if upstream <= 0:
            return Decision(size, bucket, "nothing_coming")
        waited = now - queue.oldest_enqueued()
        if waited >= timeout:
            return Decision(size, bucket, "timeout")
        return Decision(wait=timeout - waited)
    bucket, size = queue.largest_bucket()
    if size >= max_batch:
        return Decision(max_batch, bucket, "full")
    head = queue.head_bucket()
    head_size = queue.bucket_size(head)
    if head_size < min_batch:
        # This instance cannot take the head's few; the largest bucket goes instead once nothing
        # can come or the window (from the oldest item) has closed. Otherwise another (smaller)
        # group, or more items, must come.
        if size < min_batch:
            return WAIT_FOR_CHANGE
        if upstream <= 0:
            return Decision(min(size, max_batch), bucket, "nothing_coming")
        waited = now - queue.oldest_enqueued()
        if waited >= timeout:
            return Decision(min(size, max_batch), bucket, "timeout")
        return Decision(wait=timeout - waited)
    if upstream <= 0:
        return Decision(min(head_size, max_batch), head, "nothing_coming")
    waited = now - queue.oldest_enqueued()
    if waited >= timeout:
        return Decision(min(head_size, max_batch), head, "timeout")
    return Decision(wait=timeout - waited)


class BatchQueue:
    """The items waiting at one node, grouped by bucket. Not thread-safe: the node locks it."""

    def __init__(self) -> None:
        self._buckets: dict[Hashable, deque[Task]] = {}
        self._ordered = False  # becomes True once any item carries a priority
        self._seq = 0
        self.size = 0

    @property
    def single_bucket(self) -> Hashable:
        """The only bucket's key when exactly one bucket holds items and no priorities were
        seen; a private sentinel otherwise."""
        if len(self._buckets) != 1 or self._ordered:
            return _NO_BUCKET  # type: ignore[no-any-return]
        return next(iter(self._buckets))

    def __iter__(self) -> Iterator[Task]:
        for bucket in self._buckets.values():
            yield from bucket

    def push(self, task: Task, now: float) -> None:
        """Queue ``task``, stamping its arrival."""
        task.enqueued = now
        self._seq += 1
        task.seq = self._seq
        bucket = self._buckets.get(task.bucket)
        if bucket is None:
            bucket = self._buckets[task.bucket] = deque()
        if task.priority:
            self._ordered = True
        if self._ordered and bucket and bucket[-1].sort_key() > task.sort_key():
            keys = [t.sort_key() for t in bucket]
            bucket.insert(bisect.bisect_right(keys, task.sort_key()), task)
        else:
            bucket.append(task)
        self.size += 1

    def bucket_size(self, bucket: Hashable) -> int:
        """How many items wait in ``bucket``."""
        queue = self._buckets.get(bucket)
        return len(queue) if queue else 0

    def largest_bucket(self) -> tuple[Hashable, int]:
        """The fullest bucket and its size (the head bucket on ties)."""
        if len(self._buckets) == 1:
            for key, bucket in self._buckets.items():
                return key, len(bucket)
        best = self.head_bucket()
        best_size = self.bucket_size(best)
        for key, bucket in self._buckets.items():
            if len(bucket) > best_size:
                best, best_size = key, len(bucket)
        return best, best_size

    def head_bucket(self) -> Hashable:
        """The bucket whose first item is the most urgent."""
        best: Hashable = None
        best_key: tuple[int, int] | None = None
        for key, bucket in self._buckets.items():
            if bucket and (best_key is None or bucket[0].sort_key() < best_key):
                best, best_key = key, bucket[0].sort_key()
        return best

    def oldest_enqueued(self) -> float:
        """The arrival time of the oldest queued item (inf when empty)."""
        if not self._ordered:
            return min((b[0].enqueued for b in self._buckets.values() if b), default=float("inf"))
        return min((t.enqueued for t in self), default=float("inf"))

    def take(self, bucket: Hashable, count: int) -> list[Task]:
        """Remove and return up to ``count`` items of ``bucket``, most urgent first.

        With sort scores, the head item is joined by the items nearest to it by score.
        """
        queue = self._buckets.get(bucket)
        if not queue:
            return []
        if len(queue) <= count:
            batch = list(queue)
            del self._buckets[bucket]
        elif queue[0].score is not None:
            batch = self._take_nearest(queue, count)
        else:
            batch = [queue.popleft() for _ in range(count)]
        self.size -= len(batch)
        return batch

    @staticmethod
    def _take_nearest(queue: deque[Task], count: int) -> list[Task]:
        head = queue[0]
        anchor = head.score if head.score is not None else 0.0

        def distance(index: int) -> tuple[float, int]:
            score = queue[index].score
            return (abs((anchor if score is None else score) - anchor), index)

        others = sorted(range(1, len(queue)), key=distance)
        chosen = {0, *others[: count - 1]}
        batch = [queue[i] for i in sorted(chosen)]
        kept = [task for i, task in enumerate(queue) if i not in chosen]
        queue.clear()
        queue.extend(kept)
        return batch

    def remove_if(self, predicate: Callable[[Task], bool]) -> list[Task]:
        """Remove and return every task for which ``predicate`` is true."""
        removed: list[Task] = []
        for key in list(self._buckets):
            bucket = self._buckets[key]
            kept: deque[Task] = deque()
            for task in bucket:
                (removed if predicate(task) else kept).append(task)
            if kept:
                self._buckets[key] = kept
            else:
                del self._buckets[key]
        self.size -= len(removed)
        return removed

    def drain(self) -> list[Task]:
        """Remove and return everything."""
        return self.remove_if(lambda task: True)


class Bucketing:
    """Which bucket an item belongs to (items of different buckets never share a batch).

    ``bucket_key`` names an item key holding a number, or ``shape[i]`` of the item's data;
    ``bucket_edges`` (optional) round the value up to the next edge, recorded in
    ``item["_bucket_edge"]`` so that a backend can pad to it (``inf`` past the last edge).
    """

    def __init__(self, key: str | None, edges: list[float]) -> None:
        self.key = key
        self.edges = sorted(edges)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], node: str) -> Bucketing:
        key = params.get("bucket_key")
        edges = [
            get_float({"bucket_edges": edge}, "bucket_edges", node=node)
            for edge in get_list(params, "bucket_edges", node=node)
        ]
        return cls(None if key is None else str(key), edges)

    def __call__(self, item: Item) -> Hashable:
        if self.key is None:
            return None
        value = self._value(item)
        if value is None or not self.edges:
            return value
        edge = next((e for e in self.edges if value <= e), math.inf)
        item["_bucket_edge"] = edge
        return edge

    def _value(self, item: Item) -> float | None:
        key = self.key
        assert key is not None
        if key.startswith("shape[") and key.endswith("]"):
            shape = getattr(item.get("data"), "shape", None)
            return None if shape is None else float(shape[int(key[6:-1])])
        value = item.get(key)
        return None if value is None else float(value)
