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

Inside the queue, items are kept per *bucket* (items of different buckets never share a batch)
in the fair order below; a batch is the front of one bucket.

NOTE [fair order]
Requests should finish close to the order in which they came, as they do from Triton's queue,
without losing batches across requests. Every item carries its request's *birth* (its place in
the order requests were admitted; the sub-requests of a map-reduce share their parent's), so a
line of an old page is older than every line of a later page wherever it is queued. Within a
bucket, items are ordered by

1. priority (``_priority``, higher first), then
2. age (birth, oldest first), then
3. the sort score (``_sort_score``) among the items of one request, so that its similar items
   (text lines of similar width) batch together, then arrival.

Across buckets, the *head* bucket (the one holding the most urgent item) goes first; a full
batch of another bucket may go ahead of it (more items per batch) only while no queued item
would be overtaken by more than ``overtake_limit`` items of younger requests in all; the node
sets it to ``max x instances``, which bounds how far any item falls behind. Past it, the head
goes at once, even partial (release reason ``fair``).
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

    @property
    def birth(self) -> int:
        """The request's place in the order requests were admitted (its sub-requests share it):
        its age at every node (NOTE [fair order])."""


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
        birth: its request's :attr:`RequestLike.birth`.
        key: its place in its bucket, set when queued (NOTE [fair order]).
        overtaken: items of younger requests released before it while it was queued.
    """

    __slots__ = (
        "birth",
        "bucket",
        "enqueued",
        "item",
        "key",
        "on_done",
        "overtaken",
        "priority",
        "queued",
        "request",
        "score",
        "seq",
        "tag",
    )

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
        self.birth = request.birth
        self.enqueued = 0.0
        self.seq = 0
        self.key: tuple[int, int, float, int] = (0, 0, 0.0, 0)
        self.overtaken = 0
        self.queued = False
        self.tag: str = ""  # the graph node (logical name) the task belongs to


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
    overtake_limit: int | None = None,
) -> Decision:
    """Decide for one idle instance accepting ``min_batch..max_batch`` items.

    Args:
        queue: the node's queue (only read).
        now: the current clock reading.
        timeout: the batching window in seconds, measured from the oldest queued item.
        upstream: how many items are in flight upstream and may still arrive.
        overtake_limit: how many items of younger requests may be released before any queued
            item (NOTE [fair order]); None: no limit.
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
    head = queue.head_bucket()
    head_size = queue.bucket_size(head)
    if head_size >= max_batch:
        return Decision(max_batch, head, "full")
    bucket, size = queue.largest_bucket()
    if size >= max_batch:
        # A full batch of another bucket goes ahead of the head's few (which this instance may
        # not even take) while that leaves no item overtaken by more than the limit; past it,
        # the head goes first.
        if head_size < min_batch or overtake_limit is None or queue.overtakes(bucket, max_batch) <= overtake_limit:
            return Decision(max_batch, bucket, "full")
        return Decision(head_size, head, "fair")
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
        return Decision(head_size, head, "nothing_coming")
    waited = now - queue.oldest_enqueued()
    if waited >= timeout:
        return Decision(head_size, head, "timeout")
    return Decision(wait=timeout - waited)


class BatchQueue:
    """The items waiting at one node, grouped by bucket. Not thread-safe: the node locks it.

    Each bucket is kept in order of urgency (NOTE [fair order]); arrivals are kept in a second
    list, in the order they came, for the batching window.
    """

    def __init__(self) -> None:
        self._buckets: dict[Hashable, list[Task]] = {}
        self._arrivals: deque[Task] = deque()  # push order; its first task is always queued
        self._prioritised = False  # becomes True once any item carries a priority
        self._seq = 0
        self.size = 0

    @property
    def single_bucket(self) -> Hashable:
        """The only bucket's key when exactly one bucket holds items; a private sentinel
        otherwise."""
        if len(self._buckets) != 1:
            return _NO_BUCKET  # type: ignore[no-any-return]
        return next(iter(self._buckets))

    def __iter__(self) -> Iterator[Task]:
        for bucket in self._buckets.values():
            yield from bucket

    def push(self, task: Task, now: float) -> None:
        """Queue ``task`` in its place (NOTE [fair order]), stamping its arrival."""
        task.enqueued = now
        self._seq += 1
        task.seq = self._seq
        task.key = (-task.priority, task.birth, 0.0 if task.score is None else task.score, self._seq)
        task.queued = True
        task.overtaken = 0
        if task.priority:
            self._prioritised = True
        bucket = self._buckets.get(task.bucket)
        if bucket is None:
            self._buckets[task.bucket] = [task]
        elif bucket[-1].key < task.key:
            bucket.append(task)
        else:
            bisect.insort(bucket, task, key=_urgency)
        self._arrivals.append(task)
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
        best_key: tuple[int, int, float, int] | None = None
        for key, bucket in self._buckets.items():
            if best_key is None or bucket[0].key < best_key:
                best, best_key = key, bucket[0].key
        return best

    def oldest_enqueued(self) -> float:
        """The arrival time of the item queued longest (inf when empty)."""
        return self._arrivals[0].enqueued if self._arrivals else float("inf")

    def overtakes(self, bucket: Hashable, count: int) -> int:
        """How far releasing the first ``count`` items of ``bucket`` now would leave the most
        overtaken item of the other buckets behind: the largest ``overtaken`` it would reach
        (0 when it overtakes nobody; NOTE [fair order])."""
        queue = self._buckets.get(bucket)
        if not queue:
            return 0
        return max((t.overtaken + later for t, later in self._overtaken_by(queue[:count], bucket)), default=0)

    def _overtaken_by(self, batch: list[Task], bucket: Hashable) -> Iterator[tuple[Task, int]]:
        """Each queued item outside ``bucket`` (a private sentinel: every bucket) older than
        some of ``batch``, with how many of ``batch`` are younger than it."""
        births = sorted(task.birth for task in batch)
        youngest = births[-1]
        for key, tasks in self._buckets.items():
            if key == bucket:
                continue
            for task in tasks:
                if task.birth >= youngest:
                    if self._prioritised:
                        continue
                    break  # the rest of this bucket is younger still
                yield task, len(births) - bisect.bisect_right(births, task.birth)

    def take(self, bucket: Hashable, count: int) -> list[Task]:
        """Remove and return the ``count`` most urgent items of ``bucket`` (fewer if it holds
        fewer); the queued items they overtake count it (NOTE [fair order])."""
        queue = self._buckets.get(bucket)
        if not queue:
            return []
        if len(queue) <= count:
            batch = queue
            del self._buckets[bucket]
        else:
            batch = queue[:count]
            del queue[:count]
        for task in batch:
            task.queued = False
        self.size -= len(batch)
        self._forget_taken()
        for task, later in self._overtaken_by(batch, _NO_BUCKET):
            task.overtaken += later
        return batch

    def _forget_taken(self) -> None:
        """Drop taken tasks from the front of the arrival list (all of it once empty), so that
        it never holds on to tasks, their items and requests, that left the queue."""
        arrivals = self._arrivals
        if not self.size:
            arrivals.clear()
            return
        while arrivals and not arrivals[0].queued:
            arrivals.popleft()

    def remove_if(self, predicate: Callable[[Task], bool]) -> list[Task]:
        """Remove and return every task for which ``predicate`` is true."""
        removed: list[Task] = []
        for key in list(self._buckets):
            bucket = self._buckets[key]
            kept: list[Task] = []
            for task in bucket:
                (removed if predicate(task) else kept).append(task)
            if kept:
                self._buckets[key] = kept
            else:
                del self._buckets[key]
        for task in removed:
            task.queued = False
        self.size -= len(removed)
        self._forget_taken()
        return removed

    def drain(self) -> list[Task]:
        """Remove and return everything."""
        return self.remove_if(lambda task: True)


def _urgency(task: Task) -> tuple[int, int, float, int]:
    return task.key


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
