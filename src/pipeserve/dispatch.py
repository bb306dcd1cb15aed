"""The dispatcher of one node: its queue, admission, the batch policy, borrowing and the timer.

Every method of :class:`Dispatcher` requires the node's lock; none blocks, none touches a thread,
none calls a backend or a callback. Each one *decides* and records what follows from the decision
for the caller to act on while it still holds the lock (``wake``: workers to ring; ``room``: the
queue shrank) or just after releasing it (``dead``: tasks to fail). So the dispatcher is driven in
tests like :func:`~pipeserve.batching.decide`, with a fake clock and no threads.

NOTE [dispatch]
Dispatch runs whenever something changes (items arrive, an instance becomes idle, the batching
window closes, upstream work drains). It walks the groups from the largest ``max`` down and gives
the first batch the policy releases to an idle instance of that group, until the queue is empty,
no instance is idle, or the policy says wait. So a batch of 7 over groups ``max = 1&4&8`` runs as
4 + 1 + 1 + 1, and a lone item goes to the largest group whose ``min`` is 1. When the policy says
wait, the timer is armed for the moment the window closes (or the oldest expected caller lapses,
NOTE [expected callers]) and the idle workers sleep until then; the first to wake dispatches again.
Tasks whose request finished, was cancelled or expired are dropped when their batch is taken: they
never reach a backend.

NOTE [inline execution]
A blocking caller that finds the queue empty and an instance idle borrows the instance and runs
its own item on its own thread (state BORROWED): this skips two thread hand-offs, which are the
largest cost of a fast pipe in Python. The instance is still used by one thread at a time, and
backends that must stay on one thread (``thread_affine = True``) or nodes with ``inline = false``
never lend their instances. Nobody borrows while callers are expected back or items are on their
way with a batching window open: they should batch instead. Items that queued meanwhile go to the
workers: letting the returning caller run them too was measured and made the tail worse
(docs/benchmarks.md).
"""

from __future__ import annotations

import threading

from .batching import BatchQueue, Task, decide
from .errors import Overloaded, PipeClosed, RequestTimeout
from .expected import ExpectedCallers
from .instance import Group, Instance, State
from .settings import NodeSettings
from .statistics import NodeStats

__all__ = ["Dispatcher"]


class Dispatcher:
    """The scheduling state of one node. Every method requires the node's lock.

    Args:
        name: the node's name, for error messages.
        groups: its bucket groups (their ``min``/``max`` are final once the backends are built).
        settings: its scheduling keys.
        stats: the counters it updates.
        lock: the node's lock.

    Attributes:
        queue: the items waiting.
        upstream: items in flight upstream that may still arrive (NOTE [batch release]).
        expected: callers expected back (NOTE [expected callers]).
        wake_at: when the armed timer fires (clock reading), or None.
        closed: no more items are admitted; idle workers retire.
        wake: instances whose workers must be rung (a batch was assigned, or the timer moved
            earlier); the caller rings and clears it before releasing the lock.
        room: items left the queue since the caller last looked; blocked admitters may retry.
        dead: tasks dropped with their error, to be delivered outside the lock.
        blocked: admitters waiting for room (``overload = "block"``), on ``space``.
        space: the condition (of the node's lock) blocked admitters wait on; the dispatcher
            never waits itself.
    """

    def __init__(
        self, name: str, groups: list[Group], settings: NodeSettings, stats: NodeStats, lock: threading.Lock
    ) -> None:
        self.name = name
        self.groups = groups
        self.queue = BatchQueue()
        self.upstream = 0
        self.window = max(g.timeout for g in groups)  # the longest batching window
        self.expected = ExpectedCallers(self.window)
        self.wake_at: float | None = None
        self.closed = False
        self.inline = settings.inline
        self.max_queue = settings.max_queue
        self.block = settings.block
        self.stats = stats
        self.wake: list[Instance] = []
        self.room = False
        self.dead: list[tuple[Task, BaseException]] = []
        self.blocked = 0
        self.space = threading.Condition(lock)

    @property
    def batch_range(self) -> tuple[int, int]:
        """The smallest and largest batch the node runs."""
        return min(g.min for g in self.groups), max(g.max for g in self.groups)

    def adjust(
        self, now: float, *, max_batch: int | None = None, window: float | None = None, active: int | None = None
    ) -> None:
        """Change every group's batch ``max`` (kept within its ``min`` and its backend's limit),
        batching window (seconds) and active instances (1 to all; the others are parked as they
        become idle and take no batch until raised again) while the node runs, and dispatch at
        once: a smaller ``max``, a shorter window or more instances may release batches now.
        Items already queued stay queued; batches running are not touched."""
        for group in self.groups:
            if max_batch is not None:
                group.max = max(group.min, min(max_batch, group.limit))
            if window is not None:
                group.timeout = window
            if active is not None:
                group.set_active(active)
        self.window = max(g.timeout for g in self.groups)
        self.expected.window = self.window
        self.order_groups()
        self.dispatch(now, None)

    def order_groups(self) -> None:
        """Sort the groups largest ``max`` first (once their ranges are known)."""
        self.groups.sort(key=lambda g: (-g.max, g.index))

    # ----------------------------------------------------------------- admission
    def has_room(self, count: int, now: float) -> bool:
        """Whether ``count`` more items may be queued now; False when the queue is full and the
        node blocks (``overload = "block"``): the caller waits for ``room`` and asks again. A
        full queue first drops its dead tasks (finished, cancelled or expired requests), which
        must not hold places that live ones could take.

        Raises:
            PipeClosed: the node is closed.
            Overloaded: the queue is full (``overload = "error"``).
        """
        if self.closed:
            raise PipeClosed(f"node {self.name!r} is closed", node=self.name)
        if not self.max_queue or self.queue.size + count <= self.max_queue:
            return True
        self._live(self.queue.remove_if(lambda task: task.request.finished or task.request.expired(now)), now)
        if self.queue.size + count <= self.max_queue:
            return True
        if self.block:
            return False
        self.stats.rejected += count
        raise Overloaded(f"node {self.name!r}: queue full ({self.queue.size}/{self.max_queue} items)", node=self.name)

    def enqueue(self, tasks: list[Task], now: float) -> None:
        """Queue admitted ``tasks`` (they may share a batch) and dispatch."""
        queue = self.queue
        for task in tasks:
            queue.push(task, now)
        self.stats.arrived += len(tasks)
        self.dispatch(now, None)

    # ----------------------------------------------------------------- borrowing
    def borrow(self, count: int, now: float) -> Instance | None:
        """An idle instance for the calling thread to run ``count`` items on, or None when
        waiting could help or nothing fits (NOTE [inline execution])."""
        if self.closed or self.queue.size or not self.inline:
            return None
        if self.expected and self.expected.count(now):
            return None
        if self.upstream > 0 and self.window > 0:
            return None  # more items are on their way: let them batch
        for group in self.groups:
            if group.idle and group.min <= count <= group.max:
                instance = group.idle.pop()
                instance.state = State.BORROWED
                instance.started = now
                instance.batches += 1
                instance.items += count
                self.stats.record_release(count, "nothing_coming", 0.0, inline=True)
                self.stats.arrived += count
                return instance
        return None

    # ----------------------------------------------------------------- instances
    def idle(self, instance: Instance) -> None:
        """``instance`` is ready for work (built, or done with a batch); it is parked instead
        while its group runs more instances than it should (:meth:`adjust`)."""
        instance.state = State.IDLE
        for group in self.groups:
            if group.index == instance.group:
                # The usual case (no count set) costs one attribute test on this path.
                if group.active is not None and group.over_active():
                    group.park(instance)
                else:
                    group.idle.append(instance)
                return

    def finished(self, instance: Instance, now: float, *, by_worker: bool) -> None:
        """``instance`` finished its batch: fold its busy time, make it idle and dispatch,
        preferring it for the next batch when its own worker asks. A borrowed instance's worker
        is woken only when work was assigned to it or the node closed."""
        self.stats.record_compute(len(instance.current or ()), instance.busy_seconds)
        instance.compute_seconds += instance.busy_seconds
        instance.busy_seconds = 0.0
        instance.current = None
        self.idle(instance)
        self.dispatch(now, instance if by_worker else None)
        if not by_worker and (instance.state is State.ASSIGNED or self.closed):
            self.wake.append(instance)  # ringing twice is harmless: a ring is never doubled

    def claim(self, instance: Instance, now: float) -> list[Task] | None:
        """The batch assigned to ``instance``, now running, or None."""
        if instance.state is not State.ASSIGNED:
            return None
        batch, instance.batch = instance.batch, None
        instance.state = State.RUNNING
        instance.started = now
        instance.returned = False
        instance.batches += 1
        instance.items += len(batch)  # type: ignore[arg-type]
        return batch

    def retire(self, instance: Instance) -> bool:
        """Whether the worker of idle ``instance`` should stop (the node is closed)."""
        if not (self.closed and instance.state is State.IDLE):
            return False
        for group in self.groups:
            if instance in group.idle:
                group.idle.remove(instance)
            if instance in group.parked:
                group.parked.remove(instance)
        instance.state = State.CLOSED
        return True

    def timer_due(self, instance: Instance, now: float) -> None:
        """A worker woke: if the timer has fired, disarm it and dispatch (to this instance
        first, if it is idle)."""
        if self.wake_at is not None and now >= self.wake_at:
            self.wake_at = None
            self.dispatch(now, instance if instance.state is State.IDLE else None)

    # ----------------------------------------------------------------- upstream and callers
    def add_upstream(self, delta: int, now: float) -> None:
        """Items in flight upstream changed by ``delta``; dispatch when none is left."""
        self.upstream += delta
        if self.upstream <= 0:
            self.dispatch(now, None)

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, now: float, prefer: Instance | None) -> None:
        """Assign released batches to idle instances (NOTE [dispatch])."""
        queue = self.queue
        while queue.size:
            wait: float | None = None
            upstream = self.upstream + (self.expected.count(now) if self.expected else 0)
            for group in self.groups:
                if not group.idle:
                    continue
                decision = decide(
                    queue,
                    now,
                    max_batch=group.max,
                    min_batch=group.min,
                    timeout=group.timeout,
                    upstream=upstream,
                    overtake_limit=group.max * len(group.instances),  # NOTE [fair order]
                )
                if decision.take:
                    break
                if decision.wait is not None:
                    wait = decision.wait if wait is None else min(wait, decision.wait)
            else:
                if wait is None:
                    self.wake_at = None
                else:
                    lapse = self.expected.next_lapse()
                    self._arm(now + wait if lapse is None else min(now + wait, lapse))
                return
            batch = self._live(queue.take(decision.bucket, decision.take), now)
            self.room = True
            if not batch:
                continue
            instance = prefer if prefer is not None and prefer in group.idle else group.idle[-1]
            group.idle.remove(instance)
            instance.state = State.ASSIGNED
            instance.batch = batch
            instance.reason = decision.reason
            self.stats.record_release(len(batch), decision.reason, sum(now - t.enqueued for t in batch))
            if instance is not prefer:
                self.wake.append(instance)
        self.wake_at = None

    def _live(self, batch: list[Task], now: float) -> list[Task]:
        """Drop tasks whose request finished, was cancelled or expired; they never run."""
        live = []
        for task in batch:
            request = task.request
            if request.finished:
                self.stats.dropped += 1
                self.dead.append((task, PipeClosed("request already finished", node=self.name)))
            elif request.expired(now):
                self.stats.expired += 1
                self.dead.append(
                    (task, RequestTimeout(f"node {self.name!r}: deadline passed while queued", node=self.name))
                )
            else:
                live.append(task)
        return live

    def _arm(self, at: float) -> None:
        """Fire the timer at ``at``; an earlier timer stays. Moving it earlier wakes the idle
        workers, so that one of them sleeps until the new moment."""
        if self.wake_at is not None and self.wake_at <= at:
            return
        self.wake_at = at
        for group in self.groups:
            self.wake.extend(group.idle)

    # ----------------------------------------------------------------- close
    def close(self) -> list[Task]:
        """Refuse new items and wake every worker; returns the queued tasks, to fail."""
        self.closed = True
        for group in self.groups:
            self.wake.extend(group.instances)
        self.room = True
        return self.queue.drain()
