"""One scheduled node: a thin facade that owns the lock and wires its three parts.

* :class:`~pipeserve.dispatch.Dispatcher` decides (queue, admission, batch policy, borrowing,
  timer) under the lock: NOTE [dispatch], NOTE [inline execution].
* :class:`~pipeserve.workers.Workers` owns the instances' threads: NOTE [shutdown].
* :mod:`pipeserve.delivery` runs a batch and hands its items on: NOTE [hand-off].

The node holds the lock while the dispatcher decides and the wake-ups it decided are rung, and
releases it before running a backend, delivering an outcome or failing a dropped task (decide
under a short lock, act outside it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .batching import OnDone, RequestLike, Task
from .budget import CpuBudget, machine_cores, share
from .config import NodeConfig
from .delivery import deliver
from .dispatch import Dispatcher
from .errors import PipeClosed, RequestTimeout
from .instance import Instance, plan_groups, read_ranges
from .registry import cpu_weight
from .settings import NodeSettings
from .statistics import InstanceHealth, InstanceStatistics, NodeStatistics, NodeStats
from .workers import Workers, act

__all__ = ["Node"]

Clock = Callable[[], float]


class Node:
    """A scheduled node. Build with :meth:`start`, feed with :meth:`put`, end with :meth:`close`.

    ``settings`` default to those read from ``config``; ``cpu_count`` cores are shared among its
    instances until :meth:`share_cpu` says otherwise; ``clock`` is the pipe's monotonic clock.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        settings: NodeSettings | None = None,
        cpu_count: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = config.name
        self.config = config
        self.settings = settings or NodeSettings.from_config(config)
        self._clock = clock
        self._lock = threading.Lock()
        groups, instances = plan_groups(config)
        self.stats_data = NodeStats()
        self._dispatch = Dispatcher(self.name, groups, self.settings, self.stats_data, self._lock)
        self._workers = Workers(config, self.settings, instances, self._lock, self._dispatch, clock)
        self._workers.cpu_threads = share(cpu_count or machine_cores(), len(instances))
        self._bucketing = self.settings.bucketing

    @property
    def instances(self) -> tuple[Instance, ...]:
        """The node's instances, in order (for diagnostics; their state is the node's)."""
        return tuple(self._workers.instances)

    @property
    def cpu_threads(self) -> int:
        """The threads each instance may use."""
        return self._workers.cpu_threads

    @property
    def computing_instances(self) -> int:
        """Its instances that compute on the CPU (not those of a backend that says it waits, such
        as ``Remote``; each bucket group has its own backend): only those share the pipe's cores."""
        groups = {instance.group: instance.tree for instance in self._workers.instances}
        computing = {group for group, tree in groups.items() if cpu_weight(tree, self.name) > 0}
        return sum(1 for instance in self._workers.instances if instance.group in computing)

    def enable_tracing(self) -> None:
        """Record node spans of traced requests from now on (NOTE [traces]); until then a batch
        does not look at its requests' traces."""
        self._workers.tracing = True

    def share_cpu(self, threads: int, budget: CpuBudget | None = None) -> None:
        """Set each instance's fair share of the cores and the CPU budget its instances join
        (before :meth:`start`; NOTE [elastic budget] in :mod:`pipeserve.budget`)."""
        self._workers.cpu_threads = max(1, threads)
        if budget is not None:
            self._workers.budget = budget

    def start(self) -> None:
        """Start the workers and wait until every instance is initialised.

        Raises:
            PipeServeError: an instance failed to initialise, or the groups' batch ranges are
                unusable; the node is closed again.
        """
        try:
            self._workers.start()
            read_ranges(self._dispatch.groups, self.name)
        except BaseException:
            self.close()
            raise
        self._dispatch.order_groups()
        if any(getattr(i.backend, "thread_affine", False) for i in self._workers.instances):
            self._dispatch.inline = False  # see NOTE [inline execution]
        if self._workers.watched:
            self._dispatch.inline = False  # a hung backend must not hang its caller (NOTE [hung backends])

    def adjust(self, *, max_batch: int | None = None, window: float | None = None, active: int | None = None) -> None:
        """Change the batch ``max``, the batching window (seconds) and the active instances
        per group while the node runs (see :meth:`Dispatcher.adjust`)."""
        dispatcher = self._dispatch
        with self._lock:
            dispatcher.adjust(self._clock(), max_batch=max_batch, window=window, active=active)
            if dispatcher.wake or dispatcher.room:
                act(dispatcher)
        if dispatcher.dead:
            self._workers.flush_dead()

    @property
    def active_instances(self) -> int:
        """Instances taking batches now (all but the parked ones, :meth:`adjust`)."""
        with self._lock:
            groups = self._dispatch.groups
            return sum(len(g.instances) if g.active is None else g.active for g in groups)

    @property
    def batching_window(self) -> float:
        """The node's longest batching window now, in seconds."""
        return self._dispatch.window

    # ----------------------------------------------------------------- feeding
    @property
    def batch_limit(self) -> int:
        """The largest batch any of its backends accepts."""
        return max(g.limit for g in self._dispatch.groups)

    @property
    def batch_range(self) -> tuple[int, int]:
        """The smallest and largest batch the node runs."""
        return self._dispatch.batch_range

    def make_task(self, item: dict[str, Any], request: RequestLike, on_done: OnDone) -> Task:
        """A task for ``item``, its bucket, priority (``_priority``) and sort score
        (``_sort_score``) read from the item."""
        return Task(
            item,
            request,
            on_done,
            priority=int(item.get("_priority", 0)),
            bucket=self._bucketing(item),
            score=item.get("_sort_score"),
        )

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
        """Queue ``tasks`` together (they may share a batch) and dispatch; with ``inline``, run a
        single task on this thread if the dispatcher lends an instance (NOTE [inline execution]).

        ``deadline`` bounds a wait for queue room (``overload = "block"``); ``caller`` is the
        blocking caller's thread (NOTE [expected callers]); ``arrived`` counts the tasks that
        were counted upstream; ``on_worker`` says this thread is a worker (NOTE [hand-off]).

        Raises:
            PipeClosed: the node is closed. Overloaded: the queue is full. RequestTimeout: the
                deadline passed while waiting for room.
        """
        dispatcher = self._dispatch
        with self._lock:
            dispatcher.upstream -= arrived
            now = self._clock()
            if caller is not None and dispatcher.expected:
                dispatcher.expected.back(caller, now)
            borrowed = dispatcher.borrow(len(tasks), now) if inline else None
            if borrowed is None:
                if not dispatcher.has_room(len(tasks), now):
                    self._wait_for_room(len(tasks), deadline)
                    now = self._clock()
                dispatcher.enqueue(tasks, now)
                if dispatcher.wake or dispatcher.room:
                    act(dispatcher)
        if borrowed is not None:
            self._workers.run(borrowed, tasks, on_worker=on_worker, by_worker=False)
        if dispatcher.dead:
            self._workers.flush_dead()

    def _wait_for_room(self, count: int, deadline: float | None) -> None:
        """Block until ``count`` items fit (requires the lock; ``overload = "block"``)."""
        dispatcher = self._dispatch
        while True:
            wait = None if deadline is None else deadline - self._clock()
            if wait is not None and wait <= 0:
                raise RequestTimeout(f"node {self.name!r}: deadline passed waiting for queue room", node=self.name)
            dispatcher.blocked += 1
            try:
                dispatcher.space.wait(wait)
            finally:
                dispatcher.blocked -= 1
            if dispatcher.has_room(count, self._clock()):
                return

    def caller_returned(self, caller: int) -> None:
        """A blocking call from thread ``caller`` returned: expect it back for one window."""
        if self._dispatch.window <= 0:
            return
        with self._lock:
            self._dispatch.expected.returned(caller, self._clock())

    @property
    def counts_upstream(self) -> bool:
        """Whether upstream counts matter here: only with a batching window."""
        return self._dispatch.window > 0

    def add_upstream(self, delta: int) -> None:
        """Count items in flight upstream that may still arrive (see NOTE [batch release])."""
        dispatcher = self._dispatch
        with self._lock:
            dispatcher.add_upstream(delta, self._clock())
            act(dispatcher)
        if dispatcher.dead:
            self._workers.flush_dead()

    @property
    def cheap(self) -> bool:
        """Whether a batch here costs less than a thread hand-off (NOTE [hand-off])."""
        return self.stats_data.cheap()

    # ----------------------------------------------------------------- observing
    def stats(self) -> dict[str, Any]:
        """The node's statistics as plain data (the dict view of :meth:`statistics`)."""
        return self.statistics().as_dict()

    def statistics(self) -> NodeStatistics:
        """A frozen snapshot of the node's statistics, with one entry per instance."""
        with self._lock:
            instances = tuple(InstanceStatistics.of(i) for i in self._workers.instances)
            return self.stats_data.snapshot(self.name, queued=self._dispatch.queue.size, instances=instances)

    @property
    def abandoned(self) -> int:
        """Thread instances abandoned with a hung batch (NOTE [hung backends])."""
        return len(self._workers.abandoned)

    def health(self, stuck_after: float) -> tuple[InstanceHealth, ...]:
        """Each instance's health (see :class:`~pipeserve.statistics.InstanceHealth`)."""
        now = self._clock()
        with self._lock:
            closed = self._dispatch.closed
            return tuple(InstanceHealth.of(i, now, stuck_after, closed) for i in self._workers.instances)

    # ----------------------------------------------------------------- close
    def close(self, timeout: float = 10.0) -> None:
        """Shut down (NOTE [shutdown]). Idempotent."""
        dispatcher = self._dispatch
        with self._lock:
            already = dispatcher.closed
            pending = dispatcher.close()
            act(dispatcher)
        for task in pending:
            deliver(task, PipeClosed(f"node {self.name!r} closed before the item ran", node=self.name))
        if not already:
            self._workers.join(timeout)
