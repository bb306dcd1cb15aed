"""Walks requests through the nodes and completes them exactly once.

Each entry of the pipe is one node for now; the multi-node graph (``next``, ``map``, filters,
sub-requests) builds on this same contract: a node calls back :meth:`Executor.node_done` once
per task, with the error or None, and the executor either routes the item on or completes the
request through its gate (NOTE [ownership]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .batching import Task
from .node import Node
from .request import Request

__all__ = ["Executor"]


class Executor:
    """Starts requests at their entry node and finishes them when the node is done."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = nodes

    def start(self, request: Request, *, inline: bool = False) -> None:
        """Send ``request`` into its entry node; with ``inline``, the request may run on this
        thread (NOTE [inline execution]).

        Raises:
            Overloaded, PipeClosed, RequestTimeout: the node refused the item.
        """
        node = self.nodes[request.entry]
        task = node.make_task(request.item, request, self.node_done)
        node.put([task], request.deadline, request.caller, inline=inline and request.caller is not None)

    def start_many(self, requests: Sequence[Request]) -> None:
        """Send several requests at once, so that those sharing an entry may share a batch."""
        by_entry: dict[str, list[Request]] = {}
        for request in requests:
            by_entry.setdefault(request.entry, []).append(request)
        for entry, group in by_entry.items():
            node = self.nodes[entry]
            deadlines = [r.deadline for r in group if r.deadline is not None]
            tasks = [node.make_task(r.item, r, self.node_done) for r in group]
            node.put(tasks, min(deadlines) if deadlines else None, group[0].caller)

    def node_done(self, task: Task, error: BaseException | None) -> None:
        """Called by a node once per task: complete the request."""
        request = task.request
        if request.caller is not None:
            # Before the caller wakes, so that the node's next dispatch already expects it back
            # (NOTE [expected callers]).
            self.nodes[request.entry].caller_returned(request.caller)
        if error is None:
            task.request.succeed(task.item)
        else:
            task.request.fail(error)
