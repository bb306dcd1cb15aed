"""The public facade: build a pipe from a configuration and call it from any thread.

Example::

    import pipeserve as ps

    with ps.pipe({"backend": "Identity", "instance_num": 2, "max": 8}) as pipe:
        item = {"data": 42}
        pipe(item)                      # blocks; item["result"] == 42
        future = pipe.submit({"data": 1})
        assert future.result()["result"] == 1

NOTE [drain]
``close(drain=True)`` first stops admitting (new calls fail with PipeClosed, ``state`` becomes
``draining``) and waits, up to the bound, until every admitted request has its outcome (the
pipe counts requests between admission and outcome, :class:`~pipeserve.request.InFlight`). Then
it closes as without draining (NOTE [shutdown]): whatever is still queued fails with PipeClosed,
running batches get what is left of the bound to finish. A server calls it on SIGTERM.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from types import MappingProxyType
from typing import Any

from .budget import CpuBudget, process_budget, share
from .config import get_float, get_int, load_config
from .description import EntryDescription, GraphNodeDescription, NodeDescription, PipeDescription
from .errors import ConfigError, InputError, MissingDependencyError, PipeClosed, UnknownNameError
from .events import Event
from .executor import Executor
from .graph import COMPUTE, Graph
from .node import Node
from .registry import cpu_weight, import_modules
from .request import DeadlineWatch, InFlight, Request
from .settings import NodeSettings
from .signature import parse_signature
from .statistics import Health, NodeHealth, NodeStatistics
from .syntax import parse_backend
from .tracing import Trace, TraceExporter, TraceSink, parse_traceparent
from .tuning.autotune import AutoTuner, attach, widened

__all__ = ["Observer", "Pipe", "PipeState", "TraceOption", "instance_count", "pipe"]

log = logging.getLogger("pipeserve")

Item = dict[str, Any]
Config = str | os.PathLike[str] | Mapping[str, Any]
Clock = Callable[[], float]
Observer = Callable[[str, float, "BaseException | None"], None]
"""Told ``(entry, seconds, error)`` as each request gets its outcome: the entry it started at, the
seconds from admission to outcome, and None on success, the error otherwise (a
``concurrent.futures.CancelledError`` when the caller cancelled it). See :meth:`Pipe.add_observer`."""
TraceOption = bool | str | None
"""A call's ``trace``: None samples at the pipe's ``trace_rate``; True or False decides; a W3C
``traceparent`` continues that trace when its sampled flag is set (NOTE [traces])."""
DEFAULT_TRACE_FILE = "pipeserve-traces.jsonl"


class PipeState(enum.Enum):
    """Where a pipe is in its life: ``starting`` (building its instances), ``ready``,
    ``draining`` (finishing what it admitted, admitting nothing new) or ``closed``."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


def pipe(
    config: Config,
    *,
    timeout: float | None = None,
    cpu_count: int | None = None,
    budget: CpuBudget | None = None,
    clock: Clock = time.monotonic,
) -> Pipe:
    """Build a :class:`Pipe` from a TOML path, a flat dict or a ``{node: {...}}`` dict.

    Args:
        config: the configuration (SPEC 2).
        timeout: default request deadline in seconds (overrides the ``timeout`` key, which
            is in milliseconds like every duration in configurations).
        cpu_count: cores this pipe's compute instances may count on (default: their fair share
            of ``budget``); with no ``budget``, the pipe gets a budget of its own of this size.
        budget: the CPU budget its instances share with every other pipe that uses it (NOTE
            [elastic budget] in :mod:`pipeserve.budget`); default the process's
            (:func:`~pipeserve.process_budget`), or a private one of ``cpu_count`` cores.
        clock: the monotonic clock that deadlines, waits and batching windows are read from
            (one for the whole pipe; tests may pass their own).

    Raises:
        ConfigError: the configuration is invalid; MissingDependencyError: a backend's
            optional package is absent.
    """
    return Pipe(config, timeout=timeout, cpu_count=cpu_count, budget=budget, clock=clock)


def instance_count(config: Config) -> int:
    """How many instances computing on the CPU a pipe built from ``config`` would run (all nodes,
    all bucket groups; a ``Remote`` node's, which wait on the network, are not counted), without
    building it: what a host of several pipes needs to share the cores among them.

    Raises:
        ConfigError: the configuration is invalid.
    """
    loaded = load_config(config)
    graph = Graph.from_config(loaded.nodes)
    total = 0
    for name, node in graph.nodes.items():
        if node.kind == COMPUTE and node.physical == name:
            import_modules(NodeSettings.from_config(loaded.nodes[name]).imports, name)  # they register backends
            for group in loaded.nodes[name].groups:
                tree = parse_backend(str(group.get("backend", "Identity")), node=name)
                try:
                    computing = cpu_weight(tree, name) > 0
                except (MissingDependencyError, UnknownNameError):
                    computing = True  # building it will say what is wrong
                if computing:
                    total += get_int(group, "instance_num", 1, node=name, minimum=1)
    return total


class Pipe:
    """A running pipe. Thread-safe; see the module docstring for an example."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float | None = None,
        cpu_count: int | None = None,
        budget: CpuBudget | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """See :func:`pipe`."""
        self._state = PipeState.STARTING
        self._clock = clock
        self.config = load_config(config)
        self.timeout = timeout or None
        # Per-entry default deadlines: the call's timeout, else the pipe's, else the entry
        # node's ``timeout`` key (milliseconds; a top-level key applies to every node).
        self._entry_timeouts = {
            name: timeout or get_float(node.params, "timeout", 0.0, node=name, minimum=0.0) / 1e3 or None
            for name, node in self.config.nodes.items()
        }
        self.graph = Graph.from_config(self.config.nodes)
        # Entries: the roots that are not only there as the target of a Jump/MapReduce.
        targets = {node.jump for node in self.graph.nodes.values()}
        self._entries = tuple(r for r in self.graph.roots if r not in targets) or self.graph.roots
        self._signatures = {entry: parse_signature(self.config.nodes[entry].params, entry) for entry in self._entries}
        # Pipe-wide keys: top-level ones reach every node, the entry's included.
        pipe_keys = self.config.nodes[self._entries[0]].params
        self._trace_rate = get_float(pipe_keys, "trace_rate", 0.0, node=self._entries[0], minimum=0.0)
        if self._trace_rate > 1.0:
            raise ConfigError(f"trace_rate must be within 0..1, got {self._trace_rate}", key="trace_rate")
        trace_file = pipe_keys.get("trace_file")
        self._nodes: dict[str, Node] = {}  # every check that can fail without building is above
        self._autotune: AutoTuner | None = None
        try:
            for name, node in self.graph.nodes.items():
                if node.kind == COMPUTE and node.physical == name:
                    settings = NodeSettings.from_config(self.config.nodes[name])
                    import_modules(settings.imports, name)  # they register backends
                    built = self.config.nodes[name]
                    if self.config.autotune is not None:
                        built = widened(built)  # the tuner's instances beyond instance_num, parked
                    self._nodes[name] = Node(built, settings=settings, clock=clock)
            # The cores are one budget for the process: stages and pipes run at the same time
            # (NOTE [elastic budget]). Instances that wait on the network (a Remote node's) take
            # no share.
            if budget is None:
                budget = process_budget() if cpu_count is None else CpuBudget(cpu_count)
            self.budget = budget
            computing = sum(node.computing_instances for node in self._nodes.values())
            threads = share(cpu_count, computing) if cpu_count else budget.fair_share(computing)
            for scheduled in self._nodes.values():
                scheduled.share_cpu(threads, budget)
                scheduled.start()
            self._executor = Executor(self.graph, self._nodes)
            self._autotune = (
                attach(self, self.config.autotune, clock=clock) if self.config.autotune is not None else None
            )
        except BaseException:
            for started in self._nodes.values():
                started.close()
            raise
        self._deadlines = DeadlineWatch(clock)
        self._inflight = InFlight()
        self._observers: list[Observer] = []  # replaced whole, never changed in place
        self._observers_lock = threading.Lock()
        self._observer_failed = False
        self._exporter = TraceExporter(str(trace_file or DEFAULT_TRACE_FILE))
        self._watching = self._trace_rate > 0  # observers, or a trace rate: admission looks further
        self._tracing = False
        self._close_lock = threading.Lock()
        self._state = PipeState.READY
        if self._autotune is not None:
            self._autotune.start()

    # ----------------------------------------------------------------- calls
    def __call__(self, item: Item | list[Item], *, timeout: float | None = None, trace: TraceOption = None) -> Any:
        """Process ``item`` (or a list of items) and block until done.

        The item's dict is updated in place: ``result`` and any keys the nodes set. For a list,
        every item gets its own outcome; once all are done, the first failing item's error (in
        list order) is raised, the others being updated.

        ``trace`` asks for (or against) a trace of the request (:data:`TraceOption`).

        Returns:
            the item (or the list) that was passed in.

        Raises:
            InputError: not a dict, no ``data``, unknown ``node_name``.
            RequestError: the request failed (BackendError, RequestTimeout, Overloaded,
                PipeClosed...).
        """
        if isinstance(item, list):
            return self._call_many(item, timeout, trace)
        event = item.get("event") if isinstance(item, dict) else None
        if isinstance(event, Event):
            future = self.submit(item, timeout=timeout, trace=trace)
            future.add_done_callback(lambda done: event.set_outcome(done.exception()))
            return item
        request = self._admit(item, timeout, trace)
        request.caller = threading.get_ident()
        try:
            # A request with a deadline is never run inline: its caller must be free to time out.
            self._executor.start(request, inline=request.deadline is None)
        except BaseException as exc:
            request.fail(exc)  # refused at the entry: its outcome is this error, raised here
            raise
        self._wait(request)
        return item

    def submit(self, item: Item, *, timeout: float | None = None, trace: TraceOption = None) -> Future[Item]:
        """Queue ``item`` and return a Future resolving to it (updated) or to the error.

        Raises:
            InputError, Overloaded, PipeClosed: the item was not admitted.
        """
        request = self._admit(item, timeout, trace)
        future = request.attach_future()
        self._deadlines.watch(request)
        try:
            self._executor.start(request)
        except BaseException as exc:
            request.fail(exc)  # refused at the entry: raised here rather than set on the future
            raise
        return future

    def submit_many(
        self, items: list[Item], *, timeout: float | None = None, inline: bool = False, trace: TraceOption = None
    ) -> list[Future[Item]]:
        """Queue several items together (those sharing an entry may share a batch) and return a
        Future for each, as :meth:`submit` does for one.

        With ``inline``, the calling thread runs the entry's batch itself where the entry node is
        *cheap* (measured cheaper than a thread hand-off) and an instance is idle: for an event
        loop, which must never block on costly work but loses more to a hand-off than such a
        node costs. The Futures are then already done on return.

        ``trace`` applies to every item (each is a request with its own trace; a ``traceparent``
        makes them siblings under the caller's span).

        Raises:
            InputError, Overloaded, PipeClosed: an item was not admitted (then none is queued).
        """
        futures = []
        for request in self._start_many(items, timeout, futures=True, cheap_inline=inline, trace=trace):
            assert request.future is not None  # attached by _start_many
            futures.append(request.future)
        return futures

    async def acall(self, item: Item, *, timeout: float | None = None, trace: TraceOption = None) -> Item:
        """Process ``item`` without blocking the event loop; returns the updated item.

        Cancelling the awaiting task cancels the request: an item still queued never runs.
        """
        return await asyncio.wrap_future(self.submit(item, timeout=timeout, trace=trace))

    def _start_many(
        self,
        items: list[Item],
        timeout: float | None,
        *,
        futures: bool,
        cheap_inline: bool = False,
        trace: TraceOption = None,
    ) -> list[Request]:
        """Admit every item, then start them together (for :meth:`submit_many` with Futures, for
        a blocking list call with the calling thread as their caller). If any item is refused,
        those admitted before it get the same error as their outcome and the error is raised."""
        requests: list[Request] = []
        try:
            for item in items:
                requests.append(self._admit(item, timeout, trace))
            caller = None if futures else threading.get_ident()
            for request in requests:
                request.caller = caller
                if futures:
                    request.attach_future()
                    self._deadlines.watch(request)
            self._executor.start_many(requests, cheap_inline=cheap_inline)
        except BaseException as exc:
            for request in requests:
                request.fail(exc)  # no-op for those that already have an outcome
            raise
        return requests

    def _call_many(self, items: list[Item], timeout: float | None, trace: TraceOption) -> list[Item]:
        requests = self._start_many(items, timeout, futures=False, trace=trace)
        first_error: BaseException | None = None
        for request in requests:
            try:
                self._wait(request)
            except Exception as exc:  # noqa: BLE001 - every item is waited for first
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return items

    def _admit(self, item: Any, timeout: float | None, trace: TraceOption = None) -> Request:
        if self._state is not PipeState.READY:
            raise PipeClosed("the pipe is closed" if self._state is PipeState.CLOSED else "the pipe is draining")
        if not isinstance(item, dict):
            raise InputError(f"an item must be a dict with a 'data' key, got {type(item).__name__}")
        if "data" not in item:
            raise InputError(f"the item has no 'data' key (keys: {sorted(map(str, item))})")
        entry = item.get("node_name")
        if entry is None:
            if len(self._entries) != 1:
                raise InputError(f"this pipe has several entries; set 'node_name' to one of {list(self._entries)}")
            entry = self._entries[0]
        elif entry not in self.graph.nodes:
            raise InputError(f"unknown node_name {entry!r}; entries: {list(self._entries)}")
        else:
            self.graph.plan(entry)  # InputError if this node cannot be an entry
        seconds = self._entry_timeouts[entry] if timeout is None else timeout
        deadline = self._clock() + seconds if seconds else None
        self._inflight.enter()
        request = Request(item, deadline, entry, self._inflight)
        if trace is not None or self._watching:
            self._watch(request, trace)
        return request

    def _watch(self, request: Request, trace: TraceOption) -> None:
        """Give ``request`` a trace if it is sampled (NOTE [traces]), and have its outcome told to
        the trace and the observers."""
        if trace is not False and (trace is not None or self._trace_rate):
            self._sample(request, trace)
        if request.trace is not None or self._observers:
            request.started = self._clock()
            request.watch = self._outcome

    def _sample(self, request: Request, trace: TraceOption) -> None:
        parent = parse_traceparent(trace) if isinstance(trace, str) else None
        if parent is not None:
            sampled = parent.sampled
        elif trace is None or isinstance(trace, str):  # no (valid) traceparent: the pipe's rate
            sampled = self._trace_rate > 0 and random.random() < self._trace_rate
        else:
            sampled = trace
        if not sampled:
            return
        if not self._tracing:
            for node in self._nodes.values():
                node.enable_tracing()  # before the flag: a request racing this one may skip the loop
            self._tracing = True
        request.trace = Trace(request.entry, self._clock, self._clock(), self._exporter, parent)

    def _outcome(self, request: Request, error: BaseException | None) -> None:
        cancelled = request.cancelled
        if request.trace is not None:
            try:
                request.trace.finish(error, cancelled=cancelled)
            except Exception:  # a trace must never cost a request its outcome
                log.exception("a trace could not be finished")
        if not self._observers:
            return
        seconds = self._clock() - request.started
        if cancelled:
            error = CancelledError()
        for observer in self._observers:
            try:
                observer(request.entry, seconds, error)
            except Exception:  # an observer must never cost a request its outcome
                if not self._observer_failed:
                    self._observer_failed = True
                    log.exception("a pipe observer failed (reported once)")

    def _wait(self, request: Request) -> None:
        remaining = None if request.deadline is None else max(0.0, request.deadline - self._clock())
        if not request.wait(remaining):
            request.time_out()
            request.wait(None)
        if request.error is not None:
            raise request.error

    # ----------------------------------------------------------------- introspection
    @property
    def entries(self) -> tuple[str, ...]:
        """The nodes a request may start at (``node_name``); the first is the default."""
        return self._entries

    @property
    def state(self) -> PipeState:
        """Where the pipe is in its life (see :class:`PipeState`)."""
        return self._state

    def max(self, node_name: str | None = None) -> int:
        """The largest batch the entry node runs."""
        return self._node(node_name).batch_range[1]

    def min(self, node_name: str | None = None) -> int:
        """The smallest batch the entry node runs (always 1 for a valid pipe)."""
        return self._node(node_name).batch_range[0]

    def _node(self, name: str | None) -> Node:
        if name is None:
            name = self._entries[0]
        node = self._executor.scheduler(name) if name in self.graph.nodes else None
        if node is None:
            raise InputError(f"no scheduled node {name!r}; nodes: {list(self._nodes)}")
        return node

    def adjust(
        self,
        node_name: str,
        *,
        max: int | None = None,
        batching_timeout_ms: float | None = None,
        instances: int | None = None,
    ) -> None:
        """Change a node's batch ``max``, batching window and active instances while the pipe
        serves, without dropping or failing a request: items already queued stay queued and
        batch under the new values, batches running finish as they are. ``max`` is kept within
        the node's ``min`` and the largest batch its backend accepts; ``instances`` (per bucket
        group) within 1 and ``instance_num``: the others are parked as they become idle, kept
        built, and take batches again once raised. ``describe()`` and ``max()`` show what holds.
        What an autotuner turns; the configuration is not changed.

        Raises:
            InputError: an unknown node, ``max`` or ``instances`` < 1, a negative or non-finite
                window.
        """
        node = self._node(node_name)
        for key, value in (("max", max), ("instances", instances)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{key} must be a whole number >= 1, got {value!r}")
        window = None
        if batching_timeout_ms is not None:
            if not isinstance(batching_timeout_ms, (int, float)) or not 0 <= batching_timeout_ms < float("inf"):
                raise InputError(f"batching_timeout_ms must be a number >= 0, got {batching_timeout_ms!r}")
            window = batching_timeout_ms / 1e3
        node.adjust(max_batch=max, window=window, active=instances)

    def describe(self) -> PipeDescription:
        """The pipe's entries (nodes visited, batch range, declared inputs and outputs, instance
        kinds) and scheduled nodes, as frozen data (see :mod:`pipeserve.description`)."""
        nodes = {}
        for name, node in self._nodes.items():
            nodes[name] = NodeDescription(
                name=name,
                backend=str(node.config.groups[0].get("backend", "Identity")),
                instance_kind="process" if node.settings.process else "thread",
                instances=len(node.instances),
                active_instances=node.active_instances,
                cpu_threads=node.cpu_threads,
                batch_range=node.batch_range,
                batching_timeout_ms=1e3 * node.batching_window,
                max_queue=node.settings.max_queue,
                batch_limit=node.batch_limit,
                computes=node.computing_instances > 0,
            )
        entries = {}
        for entry in self._entries:
            visited = self._visited(entry)
            scheduler = self._executor.scheduler(entry)
            inputs, outputs = self._signatures[entry]
            entries[entry] = EntryDescription(
                name=entry,
                nodes=tuple(n for n in self.graph.nodes if n in visited),
                batch_range=scheduler.batch_range if scheduler is not None else (1, 1),
                inputs=inputs,
                outputs=outputs,
                instance_kinds=frozenset(
                    nodes[self.graph.nodes[n].physical].instance_kind
                    for n in visited
                    if self.graph.nodes[n].physical in nodes
                ),
            )
        graph = {
            name: GraphNodeDescription(
                name=name,
                kind=node.kind,
                scheduler=node.physical if node.kind == COMPUTE else None,
                next=tuple(node.next),
                jump=node.jump,
                filter=node.filter,
            )
            for name, node in self.graph.nodes.items()
        }
        return PipeDescription(MappingProxyType(entries), MappingProxyType(nodes), MappingProxyType(graph))

    def _visited(self, entry: str) -> set[str]:
        """The graph nodes a request from ``entry`` may visit, through Jump targets too."""
        seen: set[str] = set()
        todo = [entry]
        while todo:
            for name in self.graph.descendants(todo.pop()):
                if name not in seen:
                    seen.add(name)
                    jump = self.graph.nodes[name].jump
                    if jump is not None:
                        todo.append(jump)
        return seen

    @property
    def pending(self) -> int:
        """Requests admitted that have no outcome yet."""
        return self._inflight.count

    # ----------------------------------------------------------------- observing
    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` each request's outcome from now on (see :data:`Observer`); it runs
        on the thread that resolves the request, before the caller learns the outcome, so it must
        be quick. One that raises is logged once and ignored. A request admitted before the call
        is not observed."""
        with self._observers_lock:
            self._observers = [*self._observers, observer]
            self._rewatch()

    def remove_observer(self, observer: Observer) -> None:
        """Stop telling ``observer`` (requests already admitted still tell it)."""
        with self._observers_lock:
            self._observers = [o for o in self._observers if o != observer]  # bound methods: equal, not identical
            self._rewatch()

    @property
    def trace_rate(self) -> float:
        """The share of requests traced when a call does not say (``trace_rate`` key, 0..1)."""
        return self._trace_rate

    @trace_rate.setter
    def trace_rate(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"trace_rate must be within 0..1, got {rate}", key="trace_rate")
        self._trace_rate = float(rate)
        self._rewatch()

    def _rewatch(self) -> None:
        """Whether admission must look at each request (observers, or a trace rate)."""
        self._watching = bool(self._observers) or self._trace_rate > 0

    def add_trace_sink(self, sink: TraceSink) -> None:
        """Send each finished trace to ``sink``: a callable taking the trace's spans, the
        request's span first, called on the pipe's exporter thread (NOTE [traces]). With none
        added, traces go to OpenTelemetry when its SDK is configured, else to the JSON-lines
        file ``trace_file`` (default ``pipeserve-traces.jsonl``)."""
        self._exporter.add_sink(sink)

    def flush_traces(self, timeout: float = 5.0) -> bool:
        """Wait until the traces of every request finished so far reached the sinks."""
        return self._exporter.flush(timeout)

    def statistics(self) -> Mapping[str, NodeStatistics]:
        """A frozen snapshot of each scheduled node's statistics, with one entry per instance
        (see :class:`~pipeserve.statistics.NodeStatistics`)."""
        return MappingProxyType({name: node.statistics() for name, node in self._nodes.items()})

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-node statistics as plain data: queued, running, batches, batch-size histogram,
        release reasons, mean queue and compute time, errors, expired, rejected (the dict view
        of :meth:`statistics`); under ``autotune``, each tuned node's ``autotune`` entry: its
        knobs now and the decisions that changed them."""
        stats = {name: node.stats() for name, node in self._nodes.items()}
        if self._autotune is not None:
            for name, entry in stats.items():
                tuned = self._autotune.node_status(name)
                if tuned is not None:
                    entry["autotune"] = tuned
        return stats

    @property
    def autotune(self) -> AutoTuner | None:
        """The tuner when the configuration has an ``autotune`` table (NOTE [autotune]): its
        ``status()``, ``decisions``, ``freeze()`` and ``unfreeze()``; else None."""
        return self._autotune

    def health(self, *, stuck_after: float = 60.0) -> Health:
        """The pipe's state and each instance's health: alive, broken (its worker ended while
        the pipe is open) or stuck (running one batch for more than ``stuck_after`` seconds).
        ``health().ok`` is what a readiness probe wants."""
        nodes = {name: NodeHealth(name, node.health(stuck_after), node.abandoned) for name, node in self._nodes.items()}
        return Health(self._state.value, MappingProxyType(nodes))

    # ----------------------------------------------------------------- lifecycle
    def close(self, timeout: float = 10.0, *, drain: bool = False) -> None:
        """Shut down within about ``timeout`` seconds. Idempotent.

        Without ``drain``: refuse new items, fail queued ones with PipeClosed, let running
        batches finish, close every backend (NOTE [shutdown]). With ``drain``: first stop
        admitting and let every admitted request finish within the bound, then do the same to
        whatever is left (NOTE [drain]).
        """
        with self._close_lock:
            if self._state is PipeState.CLOSED or (drain and self._state is PipeState.DRAINING):
                return
            # A close without drain during a drain forces it: both go on to close the nodes,
            # which is idempotent, and the drain's wait ends once the forced close failed the rest.
            self._state = PipeState.DRAINING if drain else PipeState.CLOSED
        if self._autotune is not None:
            self._autotune.close()  # no change while the nodes close
        end = self._clock() + timeout
        if drain:
            self._inflight.wait_idle(timeout, self._clock)
            self._state = PipeState.CLOSED
        for node in self._nodes.values():
            node.close(max(0.0, end - self._clock()) if drain else timeout)
        self._deadlines.close()
        self._exporter.close()

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pipeserve.Pipe nodes={list(self._nodes)} {self._state.value}>"
