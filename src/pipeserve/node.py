"""One node: its queue, its instances, the dispatch of batches, its statistics.

A node owns ``instance_num`` instances per bucket group, each with a worker thread that builds
the backend, runs the batches assigned to it and closes the backend at the end. Batches are
formed by :func:`pipeserve.batching.decide` under the node's lock (NOTE [batch release]) and run
outside it.

NOTE [dispatch]
Dispatch runs under the lock whenever something changes (items arrive, an instance becomes
idle, the batching window closes, upstream work drains). It walks the groups from the largest
``max`` down and gives the first batch the policy releases to an idle instance of that group,
until the queue is empty, no instance is idle, or the policy says wait. So a batch of 7 over
groups ``max = 1&4&8`` runs as 4 + 1 + 1 + 1, and a lone item goes to the largest group whose
``min`` is 1. When the policy says wait, the idle workers sleep until the window closes and the
first to wake dispatches again.

See NOTE [expected callers] in :mod:`pipeserve.expected` for when an entry node expects more.

NOTE [inline execution]
A blocking caller that finds the queue empty and an instance idle borrows the instance and runs
its own item on its own thread (state BORROWED): this skips two thread hand-offs, which are the
largest cost of a fast pipe in Python. The instance is still used by one thread at a time, and
backends that must stay on one thread (``thread_affine = True``) or nodes with ``inline = false``
never lend their instances. Items that queued meanwhile go to the workers: letting the returning
caller run them too was measured and made the tail worse (docs/benchmarks.md).

NOTE [shutdown]
``close()`` is idempotent: it refuses new items, fails every queued item with PipeClosed, lets
running batches finish, joins the workers with a bound (each closes its own backend), and fails
the batches of workers that did not return in time. Requests complete exactly once whatever the
interleaving, because their completion goes through one gate (NOTE [ownership]).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import handoff
from .backend import Options
from .batching import BatchQueue, Bucketing, Task, decide
from .config import NodeConfig, get_bool, get_int, get_list, get_str
from .errors import ConfigError, Overloaded, PipeClosed, PipeServeError, RequestTimeout
from .expected import ExpectedCallers
from .instance import Group, Instance, State, plan_groups
from .registry import build
from .statistics import NodeStats

__all__ = ["Node"]

Clock = Callable[[], float]
_CHEAP_AFTER = 20  # batches measured before a node may be judged cheap
_CHEAP_BELOW = 0.00005  # seconds: a batch cheaper than this costs less than a hand-off


class Node:
    """A scheduled node. Build with :meth:`start`, feed with :meth:`put`, end with :meth:`close`.

    Args:
        config: the node's configuration.
        cpu_count: cores to share among instances (default: this machine's).
        clock: a monotonic clock; tests may pass a fake one.
    """

    def __init__(self, config: NodeConfig, *, cpu_count: int | None = None, clock: Clock = time.monotonic) -> None:
        self.name = config.name
        self.config = config
        self._clock = clock
        params = config.params
        node = config.name
        self._isolate = get_bool(params, "isolate", True, node=node)
        self._inline = get_bool(params, "inline", True, node=node)
        instance_type = get_str(params, "instance_type", "thread", node=node)
        if instance_type not in ("thread", "process"):
            raise ConfigError(f"expected 'thread' or 'process', got {instance_type!r}", node=node, key="instance_type")
        self._process = instance_type == "process"
        self._max_queue = get_int(params, "max_queue", 0, node=node, minimum=0)
        self._block = get_str(params, "overload", "error", node=node)
        if self._block not in ("error", "block"):
            raise ConfigError(f"expected 'error' or 'block', got {self._block!r}", node=node, key="overload")
        self._bucket_of = Bucketing.from_params(params, node)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._queue = BatchQueue()
        for module in get_list(params, "imports", node=node):  # modules that register backends
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"cannot import {module!r}: {exc}", node=node, key="imports") from exc
        self._groups, self._instances = plan_groups(config)
        self._total = len(self._instances)
        self._cpu_threads = max(1, (cpu_count or os.cpu_count() or 1) // self._total)  # see share_cpu
        self._upstream = 0
        self._window = max(g.timeout for g in self._groups)  # the longest batching window
        self._expected = ExpectedCallers(self._window)
        self._wake_at: float | None = None
        self._closed = False
        self._dead: list[tuple[Task, BaseException]] = []
        self.stats_data = NodeStats()

    # ----------------------------------------------------------------- construction
    @property
    def instance_count(self) -> int:
        """How many instances the node runs."""
        return self._total

    def share_cpu(self, threads: int) -> None:
        """Set each instance's CPU budget (before :meth:`start`); the pipe divides the machine's
        cores among all instances of all its nodes."""
        self._cpu_threads = max(1, threads)

    def start(self) -> None:
        """Start the workers and wait until every instance is initialised.

        Raises:
            PipeServeError: an instance failed to initialise (configuration errors and missing
                dependencies as themselves, anything else as ConfigError naming the instance).
        """
        ready = threading.Barrier(self._total + 1)
        errors: list[BaseException] = []
        for instance in self._instances:
            instance.thread = threading.Thread(
                target=self._serve,
                args=(instance, ready, errors),
                name=f"pipeserve-{self.name}-{instance.index}",
                daemon=True,
            )
            instance.thread.start()
        ready.wait()
        try:
            if errors:
                raise errors[0]
            self._check_ranges()
        except BaseException:
            self.close()
            raise
        self._groups.sort(key=lambda g: (-g.max, g.index))
        if any(getattr(i.backend, "thread_affine", False) for i in self._instances):
            self._inline = False  # see NOTE [inline execution]

    def _check_ranges(self) -> None:
        for group in self._groups:
            backend = group.instances[0].backend
            assert backend is not None
            group.min, group.max = backend.min(), backend.max()
            if group.min < 1 or group.min > group.max:
                raise ConfigError(f"batch range {group.min}..{group.max} is empty", node=self.name, key="max")
        if min(g.min for g in self._groups) != 1:
            raise ConfigError("the smallest 'min' of the bucket groups must be 1", node=self.name, key="min")

    def _build(self, instance: Instance) -> None:
        options = Options(
            node=self.name,
            instance=instance.index,
            group=instance.group,
            instance_num=self._total,
            cpu_threads=self._cpu_threads,
        )
        params = self.config.groups[instance.group]
        try:
            if self._process:  # NOTE [process instances] in pipeserve.process
                from .process import ProcessBackend

                proxy = ProcessBackend(instance.label)
                proxy.init(params, options)
                instance.backend = proxy
            else:
                instance.backend = build(instance.tree, params, options)
        except PipeServeError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"instance {instance.index} of {instance.label!r} failed to initialise: {exc!r}", node=self.name
            ) from exc

    # ----------------------------------------------------------------- public surface
    @property
    def batch_range(self) -> tuple[int, int]:
        """The smallest and largest batch the node runs."""
        return min(g.min for g in self._groups), max(g.max for g in self._groups)

    def make_task(
        self, item: dict[str, Any], request: Any, on_done: Callable[[Task, BaseException | None], None]
    ) -> Task:
        """A task for ``item`` with its bucket, priority and sort score read from the item."""
        return Task(
            item,
            request,
            on_done,
            priority=int(item.get("_priority", 0)),
            bucket=self._bucket_of(item),
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
    ) -> None:
        """Queue ``tasks`` together (they may share a batch) and dispatch.

        Args:
            deadline: for ``overload = "block"``, how long to wait for room.
            caller: the blocking caller's thread, if any (NOTE [expected callers]).
            inline: run a single task on this thread if an instance is idle, nothing is queued
                and no other caller is expected (NOTE [inline execution]); returns once it ran.
            arrived: how many of the tasks were counted upstream (:meth:`add_upstream`).

        Raises:
            PipeClosed: the node is closed.
            Overloaded: ``max_queue`` would be exceeded (with ``overload = "block"``, waits for
                room until ``deadline`` instead, then raises RequestTimeout).
        """
        with self._lock:
            self._upstream -= arrived
            if caller is not None and self._expected:
                self._expected.back(caller, self._clock())
            borrowed = self._borrow_locked(len(tasks)) if inline else None
            if borrowed is None:
                self._admit_locked(len(tasks), deadline)
                now = self._clock()
                for task in tasks:
                    self._queue.push(task, now)
                self.stats_data.arrived += len(tasks)
                self._dispatch_locked(None)
        if borrowed is not None:
            self._run_borrowed(borrowed, tasks)
        self._flush_dead()

    def _admit_locked(self, count: int, deadline: float | None) -> None:
        while True:
            if self._closed:
                raise PipeClosed(f"node {self.name!r} is closed", node=self.name)
            if not self._max_queue or self._queue.size + count <= self._max_queue:
                return
            if self._block != "block":
                self.stats_data.rejected += count
                raise Overloaded(
                    f"node {self.name!r}: queue full ({self._queue.size}/{self._max_queue} items)", node=self.name
                )
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise RequestTimeout(f"node {self.name!r}: deadline passed waiting for queue room", node=self.name)
            self._space.wait(wait)

    def _borrow_locked(self, count: int) -> Instance | None:
        """An idle instance for this thread to run ``count`` items on, or None when waiting could
        help or nothing fits (NOTE [inline execution])."""
        if self._closed or self._queue.size or not self._inline:
            return None
        if self._expected and self._expected.count(self._clock()):
            return None
        if self._upstream > 0 and self._window > 0:
            return None  # more items are on their way: let them batch
        instance = None
        for group in self._groups:
            if group.idle and group.min <= count <= group.max:
                instance = group.idle[-1]
                group.idle.remove(instance)
                break
        if instance is None:
            return None
        instance.state = State.BORROWED
        self.stats_data.record_release(count, "nothing_coming", 0.0, inline=True)
        self.stats_data.arrived += count
        return instance

    @property
    def cheap(self) -> bool:
        """Whether a batch here costs less than a thread hand-off (NOTE [hand-off]): measured
        over at least ``_CHEAP_AFTER`` batches, a mean below ``_CHEAP_BELOW`` seconds."""
        stats = self.stats_data
        return stats.batches >= _CHEAP_AFTER and stats.compute_seconds < _CHEAP_BELOW * stats.batches

    def _run_borrowed(self, instance: Instance, batch: list[Task]) -> None:
        self._release(instance, self._execute(instance, batch), by_worker=False)

    def _release(self, instance: Instance, pending: handoff.Pending, *, by_worker: bool) -> None:
        """After a batch: make the instance idle (dispatching to it at once if work waits), then
        hand the batch's items on (NOTE [hand-off]). A borrowed instance's worker is woken only
        when work was assigned to it or the node closed."""
        with self._lock:
            self._fold_busy(instance)
            self._make_idle_locked(instance)
            self._dispatch_locked(instance if by_worker else None)
            if not by_worker and (instance.state is State.ASSIGNED or self._closed):
                instance.ring()
        self._flush_dead()
        handoff.flush(pending)

    def caller_returned(self, caller: int) -> None:
        """A blocking call from thread ``caller`` returned: expect it back for one window."""
        if self._window <= 0:
            return
        with self._lock:
            self._expected.returned(caller, self._clock())

    @property
    def counts_upstream(self) -> bool:
        """Whether upstream counts matter here: only with a batching window."""
        return self._window > 0

    def add_upstream(self, delta: int) -> None:
        """Count items in flight upstream that may still arrive (see NOTE [batch release])."""
        with self._lock:
            self._upstream += delta
            if self._upstream <= 0:
                self._dispatch_locked(None)
        self._flush_dead()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the node's statistics (see :class:`~pipeserve.statistics.NodeStats`)."""
        with self._lock:
            running = sum(len(i.current or ()) for i in self._instances)
            return self.stats_data.snapshot(queued=self._queue.size, running=running, instances=self._total)

    def close(self, timeout: float = 10.0) -> None:
        """Shut down (NOTE [shutdown]). Idempotent."""
        with self._lock:
            already = self._closed
            self._closed = True
            pending = self._queue.drain()
            for instance in self._instances:
                instance.ring()
            self._space.notify_all()
        for task in pending:
            self._deliver(task, PipeClosed(f"node {self.name!r} closed before the item ran", node=self.name))
        if already:
            return
        end = time.monotonic() + timeout
        for instance in self._instances:
            if instance.thread is not None and instance.thread is not threading.current_thread():
                instance.thread.join(max(0.0, end - time.monotonic()))
        for instance in self._instances:
            stuck = instance.current if instance.thread is not None and instance.thread.is_alive() else None
            for task in stuck or ():
                self._deliver(
                    task,
                    PipeClosed(
                        f"node {self.name!r} closed while instance {instance.index} was still running", node=self.name
                    ),
                )

    # ----------------------------------------------------------------- scheduling (lock held)
    def _groups_by_index(self, index: int) -> Group:
        for group in self._groups:
            if group.index == index:
                return group
        raise KeyError(index)

    def _make_idle_locked(self, instance: Instance) -> None:
        instance.state = State.IDLE
        self._groups_by_index(instance.group).idle.append(instance)

    def _dispatch_locked(self, prefer: Instance | None) -> None:
        """Assign released batches to idle instances (NOTE [dispatch])."""
        queue = self._queue
        while queue.size:
            now = self._clock()
            wait: float | None = None
            upstream = self._upstream + (self._expected.count(now) if self._expected else 0)
            for group in self._groups:
                if not group.idle:
                    continue
                decision = decide(
                    queue, now, max_batch=group.max, min_batch=group.min, timeout=group.timeout, upstream=upstream
                )
                if decision.take:
                    break
                if decision.wait is not None:
                    wait = decision.wait if wait is None else min(wait, decision.wait)
            else:
                if wait is None:
                    self._arm_timer_locked(None)
                else:
                    lapse = self._expected.next_lapse()
                    self._arm_timer_locked(now + wait if lapse is None else min(now + wait, lapse))
                return
            batch = self._live(queue.take(decision.bucket, decision.take), now)
            if self._space_waiters():
                self._space.notify_all()
            if not batch:
                continue
            instance = prefer if prefer is not None and prefer in group.idle else group.idle[-1]
            group.idle.remove(instance)
            instance.state = State.ASSIGNED
            instance.batch = batch
            self.stats_data.record_release(len(batch), decision.reason, sum(now - t.enqueued for t in batch))
            if instance is not prefer:
                instance.ring()
        self._wake_at = None

    def _space_waiters(self) -> bool:
        return self._block == "block" and bool(self._space._waiters)  # type: ignore[attr-defined]

    def _live(self, batch: list[Task], now: float) -> list[Task]:
        """Drop tasks whose request finished, was cancelled or expired; they never run."""
        live = []
        for task in batch:
            request = task.request
            if request.finished:
                self.stats_data.dropped += 1
                self._dead.append((task, PipeClosed("request already finished", node=self.name)))
            elif request.expired(now):
                self.stats_data.expired += 1
                self._dead.append(
                    (task, RequestTimeout(f"node {self.name!r}: deadline passed while queued", node=self.name))
                )
            else:
                live.append(task)
        return live

    def _arm_timer_locked(self, at: float | None) -> None:
        if at is None or (self._wake_at is not None and self._wake_at <= at):
            if at is None:
                self._wake_at = None
            return
        self._wake_at = at
        for group in self._groups:
            for instance in group.idle:
                instance.ring()

    # ----------------------------------------------------------------- workers
    def _serve(self, instance: Instance, ready: threading.Barrier, errors: list[BaseException]) -> None:
        try:
            self._build(instance)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            instance.state = State.CLOSED
            ready.wait()
            return
        with self._lock:
            self._make_idle_locked(instance)
        ready.wait()
        handoff.serving(self)
        try:
            while self._next_and_run(instance):
                pass
        finally:
            try:
                if instance.backend is not None:
                    instance.backend.close()
            except Exception:  # noqa: BLE001 - a failing close must not stop the others
                pass

    def _next_and_run(self, instance: Instance) -> bool:
        with self._lock:
            if instance.state is not State.ASSIGNED:
                if self._closed and instance.state is State.IDLE:
                    self._groups_by_index(instance.group).idle.remove(instance)
                    instance.state = State.CLOSED
                    return False
                self._wait_locked(instance)
            batch = None
            if instance.state is State.ASSIGNED:
                batch, instance.batch = instance.batch, None
                instance.state = State.RUNNING
        self._flush_dead()
        if batch:
            self._release(instance, self._execute(instance, batch), by_worker=True)
        return True

    def _wait_locked(self, instance: Instance) -> None:
        timeout = None
        if self._wake_at is not None:
            timeout = self._wake_at - self._clock()
        if timeout is None or timeout > 0:
            self._lock.release()  # as Condition.wait does, with a cheaper wake-up
            try:
                instance.doorbell.acquire(timeout=-1 if timeout is None else timeout)
            finally:
                self._lock.acquire()
        if self._wake_at is not None and self._clock() >= self._wake_at:
            self._wake_at = None
            self._dispatch_locked(instance if instance.state is State.IDLE else None)

    def _fold_busy(self, instance: Instance) -> None:
        self.stats_data.compute_seconds += instance.busy_seconds
        instance.busy_seconds = 0.0
        instance.current = None

    def _execute(self, instance: Instance, batch: list[Task]) -> handoff.Pending:
        """Run ``batch`` and deliver its outcomes; returns the hand-offs to flush once the
        instance is released (NOTE [hand-off])."""
        instance.current = batch
        start = time.perf_counter()
        failures = instance.run(batch, self._isolate)
        instance.busy_seconds += time.perf_counter() - start
        if failures:
            with self._lock:
                self.stats_data.errors += len(failures)
        pending = handoff.collecting()  # NOTE [hand-off]
        try:
            for index, task in enumerate(batch):
                self._deliver(task, failures.get(index))
        finally:
            handoff.stop_collecting()
        return pending

    def _flush_dead(self) -> None:
        if not self._dead:
            return
        with self._lock:
            dead, self._dead = self._dead, []
        for task, error in dead:
            self._deliver(task, error)

    @staticmethod
    def _deliver(task: Task, error: BaseException | None) -> None:
        try:
            task.on_done(task, error)
        except BaseException as exc:  # noqa: BLE001 - a broken callback must not lose the request
            task.request.fail(exc)
