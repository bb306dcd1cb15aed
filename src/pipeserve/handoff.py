"""Keeping a batch together on its way to the next node.

NOTE [hand-off]
When an instance finishes a batch it delivers each item in turn, and each delivery may queue the
item at a following node. Queued one by one, the first would start a batch of one there at once
(nothing else is queued yet). So while a batch is being delivered, puts made on the delivering
thread are collected and flushed together, one ``put`` per node: items that ran together arrive
together and may batch together, without waiting for a window.

A flushed group may also run at once on the delivering thread, on an idle instance of the next
node (NOTE [inline execution]), saving a thread hand-off per hop. A caller's thread, blocked on
its request anyway, may do so at any node. A worker thread does so only where the next node is
*cheap* (its batches measured cheaper than a hand-off): running costly work of another node would
keep the worker's own node from its queue and undo the overlap of stages.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import PipeServeError

if TYPE_CHECKING:
    from .batching import Task
    from .node import Node

__all__ = ["Pending", "collecting", "flush", "put", "serving", "stop_collecting"]

_local = threading.local()


def serving(node: Node) -> None:
    """Mark this thread as a worker of ``node`` (its hand-offs run inline only where cheap)."""
    _local.worker = node


Pending = list[tuple["Node", "Task", "float | None", int]]


def collecting() -> Pending:
    """Start collecting puts on this thread; pass the result to :func:`flush`."""
    pending: Pending = []
    _local.pending = pending
    return pending


def put(node: Node, task: Task, deadline: float | None, arrived: int) -> None:
    """Queue ``task`` at ``node`` now, or at the end of the delivery under way on this thread.

    A refused put (closed node, full queue) is reported through ``task.on_done``.
    """
    pending: Pending | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.append((node, task, deadline, arrived))
        return
    _put([task], node, deadline, arrived)


def stop_collecting() -> None:
    """Stop collecting on this thread; later puts go straight to their node."""
    _local.pending = None


def flush(pending: Pending) -> None:
    """Queue what was collected, one ``put`` per node, in order (inline where allowed)."""
    by_node: dict[int, Pending] = {}
    for entry in pending:
        by_node.setdefault(id(entry[0]), []).append(entry)
    worker = getattr(_local, "worker", None)
    for entries in by_node.values():
        node = entries[0][0]
        deadlines = [deadline for _, _, deadline, _ in entries if deadline is not None]
        tasks = [task for _, task, _, _ in entries]
        arrived = sum(count for _, _, _, count in entries)
        _put(tasks, node, min(deadlines) if deadlines else None, arrived, inline=worker is None or node.cheap)


def _put(tasks: list[Task], node: Node, deadline: float | None, arrived: int, inline: bool = False) -> None:
    try:
        node.put(tasks, deadline, arrived=arrived, inline=inline)
    except PipeServeError as exc:
        for task in tasks:
            task.on_done(task, exc)
