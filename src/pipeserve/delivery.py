"""Running a batch on an instance, delivering its outcomes, and handing items on together.

This module sits below both the node and the executor: it knows a node only as a
:class:`Target` (what a hand-off needs of the next node) and a request only through its task's
``on_done`` callback.

NOTE [hand-off]
When an instance finishes a batch it delivers each item in turn, and each delivery may queue the
item at a following node. Queued one by one, the first would start a batch of one there at once
(nothing else is queued yet). So while a batch is being delivered (``with Collecting() as
pending``), :func:`hand_off` calls made on the delivering thread are collected and flushed
together afterwards, one ``put`` per node: items that ran together arrive together and may batch
together, without waiting for a window.

A flushed group may also run at once on the delivering thread, on an idle instance of the next
node (NOTE [inline execution]), saving a thread hand-off per hop. A caller's thread, blocked on
its request anyway, may do so at any node. A worker thread does so only where the next node is
*cheap* (its batches measured cheaper than a hand-off): running costly work of another node would
keep the worker's own node from its queue and undo the overlap of stages. Whether the thread is a
worker travels with the flush (``on_worker``), also into a node the worker ran inline.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from .batching import Task
from .errors import PipeServeError, RequestError
from .instance import Instance, State

__all__ = [
    "Collecting",
    "Pending",
    "Target",
    "deliver",
    "deliver_batch",
    "flush",
    "hand_off",
    "run_batch",
    "trace_batch",
]


class Target(Protocol):
    """What a hand-off needs of the node it queues items at."""

    @property
    def cheap(self) -> bool:
        """Whether a batch there costs less than a thread hand-off."""

    def put(
        self,
        tasks: list[Task],
        deadline: float | None = None,
        caller: int | None = None,
        *,
        inline: bool = False,
        arrived: int = 0,
        on_worker: bool = False,
    ) -> None:
        """Queue ``tasks`` together (see :meth:`pipeserve.node.Node.put`)."""


Pending = list[tuple[Target, Task, "float | None", int]]
_local = threading.local()


class Collecting:
    """``with Collecting() as pending:`` collects the hand-offs made on this thread meanwhile
    (NOTE [hand-off]); pass ``pending`` to :func:`flush` once the delivering instance is free."""

    __slots__ = ("pending", "previous")  # no __init__: this is on every batch's path

    def __enter__(self) -> Pending:
        self.previous: Pending | None = getattr(_local, "pending", None)
        self.pending: Pending = []
        _local.pending = self.pending
        return self.pending

    def __exit__(self, *exc_info: object) -> None:
        _local.pending = self.previous


def hand_off(target: Target, task: Task, deadline: float | None, arrived: int) -> None:
    """Queue ``task`` at ``target``: at the end of the delivery under way on this thread, if any
    (NOTE [hand-off]), else now. A refused put (closed node, full queue) is reported through
    ``task.on_done``."""
    pending: Pending | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.append((target, task, deadline, arrived))
        return
    _put(target, [task], deadline, arrived)


def flush(pending: Pending, *, on_worker: bool) -> None:
    """Queue what was collected, one ``put`` per node, in order; inline where allowed."""
    if not pending:
        return
    by_target: dict[int, Pending] = {}
    for entry in pending:
        by_target.setdefault(id(entry[0]), []).append(entry)
    for entries in by_target.values():
        target = entries[0][0]
        deadlines = [deadline for _, _, deadline, _ in entries if deadline is not None]
        tasks = [task for _, task, _, _ in entries]
        arrived = sum(count for _, _, _, count in entries)
        inline = not on_worker or target.cheap
        _put(target, tasks, min(deadlines) if deadlines else None, arrived, inline=inline, on_worker=on_worker)


def _put(
    target: Target,
    tasks: list[Task],
    deadline: float | None,
    arrived: int,
    *,
    inline: bool = False,
    on_worker: bool = False,
) -> None:
    try:
        target.put(tasks, deadline, arrived=arrived, inline=inline, on_worker=on_worker)
    except PipeServeError as exc:
        for task in tasks:
            deliver(task, exc)


def run_batch(instance: Instance, batch: list[Task], isolate: bool, *, queued: bool = False) -> dict[int, RequestError]:
    """Run ``batch`` on ``instance`` (NOTE [error isolation]); returns the failures by index.
    Adds the time spent to ``instance.busy_seconds``; holds the instance's share of the CPU
    budget meanwhile (NOTE [elastic budget] in :mod:`pipeserve.budget`), not widened when more
    items of the node are ``queued``."""
    instance.current = batch
    slot = instance.cpu
    start = time.perf_counter()
    try:
        if slot is not None:
            if slot.most > 1:
                assert instance.backend is not None
                slot.busy = instance.backend.use_threads(slot.budget.grant(slot, widen=not queued))
            else:
                slot.busy = slot.weight
        failures = instance.run(batch, isolate)
    except Exception as exc:  # noqa: BLE001 - use_threads failed: the batch's requests must learn it
        failures = {index: instance.wrap(exc) for index in range(len(batch))}
    finally:
        if slot is not None:
            slot.busy = 0
    instance.busy_seconds += time.perf_counter() - start
    return failures


def trace_batch(instance: Instance, batch: list[Task], failures: dict[int, RequestError], end: float) -> None:
    """Record a ``node`` span for each traced task of a batch that ended at clock reading ``end``
    (NOTE [traces] in :mod:`pipeserve.tracing`); called before the node folds the batch's busy
    time into its statistics."""
    compute = instance.busy_seconds
    size = len(batch)
    inline = instance.state is State.BORROWED
    sent, instance.sent_span = instance.sent_span, None
    for index, task in enumerate(batch):
        request = task.request
        trace = request.trace
        if trace is None:
            continue
        queued = instance.started if inline else task.enqueued
        trace.add(
            f"node {task.tag or instance.node}",
            "node",
            request.span,
            queued,
            end,
            {
                "pipeserve.node": task.tag or instance.node,
                "pipeserve.scheduler": instance.node,
                "pipeserve.instance": instance.index,
                "pipeserve.backend": instance.label,
                "pipeserve.batch_size": size,
                "pipeserve.release_reason": "nothing_coming" if inline else instance.reason,
                "pipeserve.inline": inline,
                "pipeserve.queue_ms": round(1e3 * max(0.0, instance.started - queued), 4),
                "pipeserve.compute_ms": round(1e3 * compute, 4),
            },
            failures.get(index),
            sent[1] if sent is not None and sent[0] is task else None,
        )


def deliver_batch(batch: list[Task], failures: dict[int, RequestError]) -> Pending:
    """Deliver each task's outcome; returns the hand-offs the deliveries made (NOTE [hand-off])."""
    with Collecting() as pending:
        for index, task in enumerate(batch):
            deliver(task, failures.get(index))
    return pending


def deliver(task: Task, error: BaseException | None) -> None:
    """Tell ``task``'s owner the outcome; a raising callback fails the request instead of
    losing it."""
    try:
        task.on_done(task, error)
    except BaseException as exc:  # noqa: BLE001 - a broken callback must not lose the request
        task.request.fail(exc)
