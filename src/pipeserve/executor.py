"""Walks requests through the graph and completes them exactly once.

A single-node entry takes a short path: its task's request is the Request itself. Any other entry
gets a :class:`Walk`, the per-request state of one pass through the entry's subgraph.

NOTE [walk]
Each node of a walk runs once all its predecessors inside the subgraph are done. Its input is a
shallow copy of its single predecessor's output, or a new dict built by its ``map``; ``context``
is carried over when a map does not mention it. Its filter then decides: ``Run`` queues it at its
node's scheduler (where it batches with other requests' items), ``Skip`` passes the input on as
its output, ``Break`` ends the request with the input as its output (work still running in other
branches is dropped, never delivered), ``SerialSkip``/``SubGraphSkip`` skip a chain or a closed
subgraph whose nodes all *fold* into the skipping node (a later map naming them reads the skipping
node's input), ``Error`` fails the request. The first error of any node stops new nodes from
starting and ends the request once its running nodes finish. The sink's output is the request's.

``Jump`` and ``MapReduce`` nodes start child walks (NOTE [sub-requests] in :mod:`pipeserve.fanout`).
The input of a node is built by :func:`pipeserve.graph.build_input`.

Every node of a walk is counted upstream at its scheduler until the item reaches it or is
skipped, so that batching windows wait only while something can still come (NOTE [batch release]);
the walk's ``counted`` set is that tally, and :meth:`Walk._forget` its one way down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .batching import Task
from .delivery import hand_off
from .errors import FilterError, PipeServeError, RequestError, locate
from .fanout import Gather, merge, split
from .filters import Filter, Status, as_status
from .graph import COMPUTE, MAPREDUCE, Graph, GraphNode, Plan, build_input
from .node import Node
from .registry import resolve_filter
from .request import Request
from .tracing import new_span_id

__all__ = ["Executor", "Walk"]

Item = dict[str, Any]
Finish = Callable[["Walk", Item | None, BaseException | None], None]


class Executor:
    """Starts requests at their entry and finishes them when their walk ends."""

    def __init__(self, graph: Graph, nodes: Mapping[str, Node]) -> None:
        self.graph = graph
        self.nodes = nodes
        self.filters: dict[str, Filter] = {
            name: resolve_filter(node.filter, name) for name, node in graph.nodes.items() if node.filter is not None
        }

    def scheduler(self, name: str) -> Node | None:
        """The scheduler running graph node ``name`` (None for Jump/MapReduce nodes)."""
        return self.nodes.get(self.graph.nodes[name].physical)

    def start(self, request: Request, *, inline: bool = False) -> None:
        """Send ``request`` into its entry; with ``inline``, a single-node entry may run it on
        this thread (NOTE [inline execution]).

        Raises:
            Overloaded, PipeClosed, RequestTimeout: the entry node refused the item.
        """
        plan = self.graph.plan(request.entry)
        node = self._single(plan)
        if node is not None:
            task = node.make_task(request.item, request, self._single_done)
            node.put([task], request.deadline, request.caller, inline=inline and request.caller is not None)
            return
        Walk(self, plan, request, self._request_done).begin([request.item], inline=inline)

    def start_many(self, requests: Sequence[Request], *, cheap_inline: bool = False) -> None:
        """Send several requests at once, so that those sharing an entry may share a batch.

        With ``cheap_inline``, the calling thread (an event loop, which must not block on costly
        work) runs the entry's batch itself where the entry node is cheap and an instance idle,
        and hands on as a worker does (NOTE [hand-off]).
        """
        by_entry: dict[str, list[Request]] = {}
        for request in requests:
            by_entry.setdefault(request.entry, []).append(request)
        for entry, group in by_entry.items():
            plan = self.graph.plan(entry)
            node = self._single(plan)
            if node is None:
                walks = [Walk(self, plan, request, self._request_done) for request in group]
                walks[0].begin([request.item for request in group], walks=walks[1:], cheap_inline=cheap_inline)
                continue
            deadlines = [r.deadline for r in group if r.deadline is not None]
            tasks = [node.make_task(r.item, r, self._single_done) for r in group]
            run_here = cheap_inline and node.cheap
            node.put(
                tasks, min(deadlines) if deadlines else None, group[0].caller, inline=run_here, on_worker=cheap_inline
            )

    def _single(self, plan: Plan) -> Node | None:
        if len(plan.nodes) != 1 or self.graph.nodes[plan.entry].kind != COMPUTE:
            return None
        return self.scheduler(plan.entry)

    def _expect_caller_back(self, request: Request) -> None:
        if request.caller is not None:
            node = self.scheduler(request.entry)
            if node is not None:
                # Before the caller wakes, so that the node's next dispatch already expects it back
                # (NOTE [expected callers]).
                node.caller_returned(request.caller)

    def _single_done(self, task: Task, error: BaseException | None) -> None:
        request = task.request
        assert isinstance(request, Request)
        self._expect_caller_back(request)
        if error is None:
            request.succeed(task.item)
        else:
            request.fail(error)

    def _request_done(self, walk: Walk, output: Item | None, error: BaseException | None) -> None:
        request = walk.root
        self._expect_caller_back(request)
        if error is not None:
            request.fail(error)
        else:
            assert output is not None
            request.succeed(output)


class Walk:
    """One request's pass through a plan (NOTE [walk]). Nodes see it as the task's request."""

    def __init__(
        self, executor: Executor, plan: Plan, root: Request, on_finish: Finish, span: int | None = None
    ) -> None:
        self.executor = executor
        self.graph = executor.graph
        self.plan = plan
        self.root = root
        self.on_finish = on_finish
        self.lock = threading.Lock()
        self.outputs: dict[str, Item] = {}
        self.pending = dict(plan.pending)
        self.folded: dict[str, Item] = {}
        self.running = 0
        self.error: BaseException | None = None
        self.done = False
        self.counted: set[str] = set()  # nodes still counted upstream at their scheduler
        # NOTE [traces]: node visits are children of the request's span, or of a sub-request's.
        self.trace = root.trace
        self.span = root.span if span is None else span

    # ------------------------------------------------------------------ what nodes ask of a request
    @property
    def finished(self) -> bool:
        return self.done or self.root.finished

    @property
    def deadline(self) -> float | None:
        return self.root.deadline

    @property
    def birth(self) -> int:
        return self.root.birth

    def expired(self, now: float) -> bool:
        return self.root.expired(now)

    def fail(self, error: BaseException) -> bool:
        self._failed(self.plan.entry, error)
        return True

    # ------------------------------------------------------------------ walking
    @staticmethod
    def _count_upstream(walks: Sequence[Walk]) -> None:
        """Count the nodes (but the entry) of walks sharing one plan upstream at their
        schedulers: one ``add_upstream`` per scheduler for all of them."""
        first = walks[0]
        for name in first.plan.nodes:
            node = first.executor.scheduler(name)
            if name != first.plan.entry and node is not None and node.counts_upstream:
                node.add_upstream(len(walks))
                for walk in walks:
                    walk.counted.add(name)

    def _arrive(self, name: str) -> int:
        """Stop counting ``name`` upstream as its item reaches it; returns what to pass as
        ``arrived`` to ``put`` (the scheduler then counts it down under its own lock)."""
        with self.lock:
            if name not in self.counted:
                return 0
            self.counted.discard(name)
        return 1

    def _forget(self, names: Iterable[str] | None = None) -> None:
        """Stop counting ``names`` (default: every node still counted) upstream: their items will
        never reach them."""
        with self.lock:
            gone = self.counted if names is None else self.counted.intersection(names)
            self.counted = set() if names is None else self.counted - gone
        for name in gone:
            scheduler = self.executor.scheduler(name)
            if scheduler is not None:
                scheduler.add_upstream(-1)

    def begin(
        self, items: list[Item], *, walks: Sequence[Walk] = (), inline: bool = False, cheap_inline: bool = False
    ) -> None:
        """Start this walk (and ``walks``, siblings with the same plan) at the entry with
        ``items``, one per walk; siblings' first tasks are queued together. ``inline``: a
        blocking caller may run the entry on its thread; ``cheap_inline``: an event loop may,
        where the entry node is cheap (see :meth:`Executor.start_many`)."""
        group = [self, *walks]
        self._count_upstream(group)
        entry = self.graph.nodes[self.plan.entry]
        node = self.executor.scheduler(entry.name)
        if entry.kind != COMPUTE or node is None:
            for walk, item in zip(group, items, strict=True):
                walk._fan_out(entry, item)
            return
        tasks = []
        for walk, item in zip(group, items, strict=True):
            task = node.make_task(item, walk, walk._task_done)
            task.tag = entry.name
            tasks.append(task)
            with walk.lock:
                walk.running += 1
        try:
            # A blocking caller may run the entry inline; its hand-offs then follow (NOTE [hand-off]).
            run_here = (inline and self.root.caller is not None) or (cheap_inline and node.cheap)
            node.put(tasks, self.root.deadline, self.root.caller, inline=run_here, on_worker=cheap_inline)
        except PipeServeError as exc:
            for walk in group:
                with walk.lock:
                    walk.running -= 1
                walk._failed(entry.name, exc)

    def _launch(self, node: GraphNode, item: Item) -> None:
        if node.kind != COMPUTE:
            self._forget((node.name,))
            self._fan_out(node, item)
            return
        scheduler = self.executor.scheduler(node.name)
        assert scheduler is not None
        task = scheduler.make_task(item, self, self._task_done)
        task.tag = node.name
        with self.lock:
            self.running += 1
        # A refused put comes back through _task_done with the error (NOTE [hand-off]).
        hand_off(scheduler, task, self.root.deadline, self._arrive(node.name))

    def _task_done(self, task: Task, error: BaseException | None) -> None:
        with self.lock:
            self.running -= 1
        if error is not None:
            self._failed(task.tag, error)
        else:
            self._completed(task.tag, task.item)

    def _completed(self, name: str, output: Item) -> None:
        ready = []
        with self.lock:
            if self.done or self.error is not None:
                settle = self.error is not None and self.running == 0 and not self.done
            else:
                settle = False
                self.outputs[name] = output
                if name != self.plan.sink:
                    for following in self.plan.successors[name]:
                        self.pending[following] -= 1
                        if not self.pending[following]:
                            ready.append(following)
        if settle:
            self._finish(None, self.error)
        elif name == self.plan.sink and not self.done and self.error is None:
            self._finish(output, None)
        for following in ready:
            self._ready(following)

    def _failed(self, name: str, error: BaseException) -> None:
        if not isinstance(error, RequestError):
            error = locate(error, node=name, context=f"node {name!r}")
        with self.lock:
            if self.error is None:
                self.error = error
            settle = self.running == 0 and not self.done
        if settle:
            self._finish(None, self.error)

    def _ready(self, name: str) -> None:
        """All predecessors of ``name`` are done: build its input, filter, act (NOTE [walk])."""
        if self.error is not None or self.done:  # the first error stops new nodes, siblings too
            self._forget((name,))
            return
        if name in self.folded:
            self._forget((name,))
            self._completed(name, self.folded[name])
            return
        node = self.graph.nodes[name]
        try:
            item = build_input(node, self.outputs)
            decide = self.executor.filters.get(name)
            status = Status.Run if decide is None else as_status(decide(item), node.filter or "")
        except Exception as exc:  # noqa: BLE001 - a bad map or a raising filter fails the request
            self._forget((name,))
            self._failed(name, exc)
            return
        if status is Status.Run:
            self._launch(node, item)
            return
        self._forget((name,))
        if status is Status.Skip:
            self._completed(name, item)
        elif status is Status.Break:
            self._finish(item, None)
        elif status is Status.Error:
            self._failed(name, FilterError(f"node {name!r}: filter {node.filter!r} rejected the item", node=name))
        else:
            group = self.plan.serial_chains[name] if status is Status.SerialSkip else self.plan.subgraph_skips[name]
            with self.lock:
                for skipped in group:
                    self.folded[skipped] = item
            self._completed(name, item)

    def _finish(self, output: Item | None, error: BaseException | None) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self._forget()
        self.on_finish(self, output, error)

    # ------------------------------------------------------------------ Jump and MapReduce
    def _fan_out(self, node: GraphNode, item: Item) -> None:
        """Start the sub-requests of ``node`` (NOTE [sub-requests])."""
        try:
            parts = split(node, item)
        except RequestError as exc:
            self._failed(node.name, exc)
            return
        if not parts:
            self._completed(node.name, merge(node, item, []))
            return
        assert node.jump is not None
        plan = self.graph.plan(node.jump)
        with self.lock:
            self.running += 1
        trace = self.trace
        began, fan_span = (trace.clock(), new_span_id()) if trace is not None else (0.0, 0)

        def gathered(output: Item | None, error: BaseException | None) -> None:
            with self.lock:
                self.running -= 1
            if trace is not None:
                kind = "mapreduce" if node.kind == MAPREDUCE else "jump"
                attributes = {
                    "pipeserve.node": node.name,
                    "pipeserve.target": plan.entry,
                    "pipeserve.parts": len(parts),
                }
                trace.add(
                    f"{kind} {node.name}", "fan_out", self.span, began, trace.clock(), attributes, error, fan_span
                )
            if error is not None:
                self._failed(node.name, error)
            else:
                assert output is not None
                self._completed(node.name, output)

        gather = Gather(node, item, len(parts), gathered)
        if trace is None:
            children = [Walk(self.executor, plan, self.root, gather.finisher(index)) for index in range(len(parts))]
        else:
            children = [
                Walk(
                    self.executor, plan, self.root, self._traced(gather.finisher(index), index, fan_span), new_span_id()
                )
                for index in range(len(parts))
            ]
        children[0].begin(parts, walks=children[1:])

    def _traced(self, finish: Finish, index: int, parent: int) -> Finish:
        """``finish``, recording the sub-request's span first (NOTE [traces])."""
        trace = self.trace
        assert trace is not None
        began = trace.clock()

        def finished(walk: Walk, output: Item | None, error: BaseException | None) -> None:
            attributes = {"pipeserve.target": walk.plan.entry, "pipeserve.index": index}
            name = f"sub-request {walk.plan.entry}[{index}]"
            trace.add(name, "sub_request", parent, began, trace.clock(), attributes, error, walk.span)
            finish(walk, output, error)

        return finished
