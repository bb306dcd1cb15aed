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
        """Send ``request`` into its entry node; with ``inline``, run it on this thread if the
        node has an idle instance and nothing queued (NOTE [inline execution]).

        Raises:
            Overloaded, PipeClosed, RequestTimeout: the node refused the item.
        """
        node = self.nodes[request.entry]
        task = node.make_task(request.item, request, self.node_done)
        if inline and node.run_inline(task):
            return
        node.put([task], request.deadline)

    def start_many(self, requests: Sequence[Request]) -> None:
        """Send several requests at once, so that those sharing an entry may share a batch."""
        by_entry: dict[str, list[Request]] = {}
        for request in requests:
            by_entry.setdefault(request.entry, []).append(request)
        for entry, group in by_entry.items():
            node = self.nodes[entry]
            deadlines = [r.deadline for r in group if r.deadline is not None]
            tasks = [node.make_task(r.item, r, self.node_done) for r in group]
            node.put(tasks, min(deadlines) if deadlines else None)

    def node_done(self, task: Task, error: BaseException | None) -> None:
        """Called by a node once per task: complete the request."""
        if error is None:
            task.request.succeed(task.item)
        else:
            task.request.fail(error)
