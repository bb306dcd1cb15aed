"""The worker threads of one node: build each instance, serve its batches, close it at the end.

Each instance has one worker thread that builds its backend, then loops: claim the batch the
dispatcher assigned to it, or sleep on the instance's doorbell until rung or until the dispatch
timer fires, and hand a claimed batch to the node to run. At close the worker closes its own
backend, so a backend is built, used and closed by one owner.

NOTE [shutdown]
``Node.close()`` is idempotent: it refuses new items, fails every queued item with PipeClosed,
lets running batches finish, joins the workers with a bound (each closes its own backend), and
fails the batches of workers that did not return in time. Requests complete exactly once whatever
the interleaving, because their completion goes through one gate (NOTE [ownership]). Pipe-level
draining (``Pipe.close(drain=True)``) comes before all this: see NOTE [drain] in
:mod:`pipeserve.pipe`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from .backend import Options
from .batching import Task
from .config import NodeConfig
from .delivery import deliver, deliver_batch, flush, run_batch, trace_batch
from .dispatch import Dispatcher
from .errors import ConfigError, PipeClosed, PipeServeError
from .instance import Instance, State
from .registry import build
from .settings import NodeSettings
from .tracing import TraceParent, new_span_id

__all__ = ["Workers", "act"]

Clock = Callable[[], float]


def act(dispatcher: Dispatcher) -> None:
    """Act on what the dispatcher decided (requires the node's lock): ring the workers it woke,
    and let blocked admitters retry if the queue shrank."""
    if dispatcher.wake:
        for instance in dispatcher.wake:
            instance.ring()
        dispatcher.wake.clear()
    if dispatcher.room:
        dispatcher.room = False
        if dispatcher.blocked:
            dispatcher.space.notify_all()


class Workers:
    """The threads of one node's instances.

    Args:
        config: the node's configuration (each group's parameters build its backends).
        settings: its scheduling keys (``process`` instances are built as proxies).
        instances: the instances, in order.
        lock: the node's lock; dispatcher: its dispatcher (used under that lock).
        clock: the pipe's clock.
    """

    def __init__(
        self,
        config: NodeConfig,
        settings: NodeSettings,
        instances: list[Instance],
        lock: threading.Lock,
        dispatcher: Dispatcher,
        clock: Clock,
    ) -> None:
        self.config = config
        self.settings = settings
        self.instances = instances
        self.cpu_threads = 1
        self._lock = lock
        self._dispatch = dispatcher
        self._clock = clock
        self._isolate = settings.isolate
        self.tracing = False  # set once a traced request may reach this node (NOTE [traces])

    # ----------------------------------------------------------------- start
    def start(self) -> None:
        """Start every worker and wait until each instance is built (or failed to be).

        Raises:
            PipeServeError: the first instance that failed to initialise (configuration errors and
                missing dependencies as themselves, anything else as ConfigError naming it).
        """
        ready = threading.Barrier(len(self.instances) + 1)
        errors: list[BaseException] = []
        for instance in self.instances:
            instance.thread = threading.Thread(
                target=self._run,
                args=(instance, ready, errors),
                name=f"pipeserve-{self.config.name}-{instance.index}",
                daemon=True,
            )
            instance.thread.start()
        ready.wait()
        if errors:
            raise errors[0]

    def _build(self, instance: Instance) -> None:
        options = Options(
            node=self.config.name,
            instance=instance.index,
            group=instance.group,
            instance_num=len(self.instances),
            cpu_threads=self.cpu_threads,
            remaining=partial(_remaining, instance, self._clock),
            traceparent=partial(_traceparent, instance),
        )
        params = self.config.groups[instance.group]
        try:
            if self.settings.process:  # NOTE [process instances] in pipeserve.process
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
                f"instance {instance.index} of {instance.label!r} failed to initialise: {exc!r}", node=self.config.name
            ) from exc

    # ----------------------------------------------------------------- serving
    def _run(self, instance: Instance, ready: threading.Barrier, errors: list[BaseException]) -> None:
        try:
            self._build(instance)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            instance.state = State.CLOSED
            ready.wait()
            return
        with self._lock:
            self._dispatch.idle(instance)
        ready.wait()
        try:
            while self._step(instance):
                pass
        finally:
            try:
                if instance.backend is not None:
                    instance.backend.close()
            except Exception:  # noqa: BLE001 - a failing close must not stop the others
                pass

    def _step(self, instance: Instance) -> bool:
        """Claim a batch (sleeping until there is one) and serve it; False once retired."""
        dispatcher = self._dispatch
        with self._lock:
            batch = dispatcher.claim(instance, self._clock())
            if batch is None:
                if dispatcher.retire(instance):
                    return False
                self._sleep(instance)
                batch = dispatcher.claim(instance, self._clock())
        if dispatcher.dead:
            self.flush_dead()
        if batch:
            self.run(instance, batch, on_worker=True, by_worker=True)
        return True

    def run(self, instance: Instance, batch: list[Task], *, on_worker: bool, by_worker: bool) -> None:
        """Run ``batch`` on ``instance`` (its worker's, or borrowed by the calling thread),
        deliver its outcomes, free the instance, then hand the items on (NOTE [hand-off])."""
        failures = run_batch(instance, batch, self._isolate)
        if self.tracing:
            trace_batch(instance, batch, failures, self._clock())
        if failures:
            with self._lock:
                self._dispatch.stats.errors += len(failures)
        pending = deliver_batch(batch, failures)
        dispatcher = self._dispatch
        with self._lock:
            dispatcher.finished(instance, self._clock(), by_worker=by_worker)
            if dispatcher.wake or dispatcher.room:
                act(dispatcher)
        if dispatcher.dead:
            self.flush_dead()
        if pending:
            flush(pending, on_worker=on_worker)

    def flush_dead(self) -> None:
        """Deliver the errors of the tasks the dispatcher dropped."""
        with self._lock:
            dead, self._dispatch.dead = self._dispatch.dead, []
        for task, error in dead:
            deliver(task, error)

    def _sleep(self, instance: Instance) -> None:
        """Sleep until rung or until the timer fires (requires the lock; releases it meanwhile,
        as Condition.wait does, with a cheaper wake-up)."""
        dispatcher = self._dispatch
        timeout = None if dispatcher.wake_at is None else dispatcher.wake_at - self._clock()
        if timeout is None or timeout > 0:
            self._lock.release()
            try:
                instance.doorbell.acquire(timeout=-1 if timeout is None else timeout)
            finally:
                self._lock.acquire()
        dispatcher.timer_due(instance, self._clock())
        act(dispatcher)

    # ----------------------------------------------------------------- close
    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all for the workers to return, then fail the batches
        of those still running one (NOTE [shutdown])."""
        end = self._clock() + timeout
        for instance in self.instances:
            if instance.thread is not None and instance.thread is not threading.current_thread():
                instance.thread.join(max(0.0, end - self._clock()))
        name = self.config.name
        for instance in self.instances:
            if instance.thread is not None and instance.thread.is_alive() and instance.current:
                error = PipeClosed(f"node {name!r} closed while instance {instance.index} was still running", node=name)
                for task in instance.current:
                    deliver(task, error)


def _remaining(instance: Instance, clock: Clock) -> float | None:
    """``Options.remaining`` of ``instance``: seconds to the earliest deadline of its batch."""
    batch = instance.current
    if not batch:
        return None
    deadlines = [deadline for task in batch if (deadline := task.request.deadline) is not None]
    return min(deadlines) - clock() if deadlines else None


def _traceparent(instance: Instance) -> str | None:
    """``Options.traceparent`` of ``instance``: its batch's span in the first traced request's
    trace; the span's id is kept for the node span :func:`~pipeserve.delivery.trace_batch` makes."""
    for task in instance.current or ():
        trace = task.request.trace
        if trace is not None:
            if instance.sent_span is None or instance.sent_span[0] is not task:
                instance.sent_span = (task, new_span_id())
            return TraceParent(trace.trace_id, instance.sent_span[1], True).header()
    return None
