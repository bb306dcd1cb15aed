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

NOTE [hung backends]
A node with ``compute_timeout`` (milliseconds) has a watchdog thread that looks, a few times per
timeout, for a batch that has been in ``forward`` for longer. It gives such a batch up: its
requests fail with ComputeTimeout naming node and instance. A process instance's worker process
is killed; the next batch starts a new one (as after any worker death). A thread cannot be
killed: the instance is *abandoned* — out of rotation, its thread (a daemon) left to finish
``forward`` on its own, after which it closes its backend and ends without delivering anything —
and a fresh instance is built in its place on a new thread (if that build fails, the node runs
with one instance fewer, and ``health()`` says so once none is left). Abandoned instances are
counted in the statistics (``abandoned``) and reported by ``health()``, not counted as leaks.
Whether a batch is still in ``forward`` is decided under the node's lock on both sides (the
worker marks its return there), so a batch is given up or delivered, never both. A watched node
never runs batches inline on a caller's thread: a hung backend must not hang its caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from .backend import Backend, Options
from .batching import Task
from .budget import CpuBudget
from .config import NodeConfig
from .delivery import deliver, deliver_batch, flush, run_batch, trace_batch
from .dispatch import Dispatcher
from .errors import ComputeTimeout, ConfigError, PipeClosed, PipeServeError
from .instance import Instance, State
from .registry import build
from .settings import NodeSettings
from .tracing import TraceParent, new_span_id

__all__ = ["Workers", "act"]

Clock = Callable[[], float]
log = logging.getLogger("pipeserve")


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
        self.budget: CpuBudget | None = None  # joined by each computing instance once built
        self._lock = lock
        self._dispatch = dispatcher
        self._clock = clock
        self._isolate = settings.isolate
        self.tracing = False  # set once a traced request may reach this node (NOTE [traces])
        self.watched = settings.compute_timeout > 0  # NOTE [hung backends]
        self.abandoned: list[Instance] = []
        self._next_index = len(instances)
        self._stopping = threading.Event()

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
        if self.watched:
            name = f"pipeserve-{self.config.name}-watchdog"
            threading.Thread(target=self._watch, name=name, daemon=True).start()

    def _build(self, instance: Instance) -> None:
        options = Options(
            node=self.config.name,
            instance=instance.index,
            group=instance.group,
            instance_num=len(self.instances),
            cpu_threads=self.cpu_threads,
            cpu_cores=self.budget.cores if self.budget is not None else self.cpu_threads,
            remaining=partial(_remaining, instance, self._clock),
            traceparent=partial(_traceparent, instance),
        )
        params = self.config.groups[instance.group]
        try:
            if self.settings.process:  # NOTE [process instances] in pipeserve.process
                from .process import ProcessBackend

                proxy = ProcessBackend(instance.label)
                proxy.init(params, options)
                # A worker restarted within a batch: the batch's time counts from when it is ready.
                proxy.on_ready = partial(_restarted, instance, self._clock)
                instance.backend = proxy
            else:
                instance.backend = build(instance.tree, params, options)
            self._join_budget(instance, instance.backend)
        except PipeServeError:
            raise
        except (Exception, SystemExit) as exc:  # SystemExit too: a backend's init must not end the process
            raise ConfigError(
                f"instance {instance.index} of {instance.label!r} failed to initialise: {exc!r}", node=self.config.name
            ) from exc

    def _join_budget(self, instance: Instance, backend: Backend) -> None:
        """Give a computing instance its slot in the CPU budget (NOTE [elastic budget])."""
        weight = int(getattr(backend, "cpu_weight", 1))
        if self.budget is None or weight <= 0:
            return
        instance.cpu = self.budget.join(weight, min(int(backend.max_threads()), self.budget.cores))

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
        self._serve(instance)

    def _serve(self, instance: Instance) -> None:
        """Serve batches until retired (or abandoned), then close the instance's backend."""
        try:
            while self._step(instance):
                pass
        finally:
            if instance.cpu is not None:
                instance.cpu.leave()
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
            return self.run(instance, batch, on_worker=True, by_worker=True)
        return True

    def run(self, instance: Instance, batch: list[Task], *, on_worker: bool, by_worker: bool) -> bool:
        """Run ``batch`` on ``instance`` (its worker's, or borrowed by the calling thread),
        deliver its outcomes, free the instance, then hand the items on (NOTE [hand-off]).
        False when the batch was given up meanwhile and the instance abandoned (NOTE [hung
        backends]): nothing is delivered, and its worker is to end."""
        failures = run_batch(instance, batch, self._isolate, queued=self._dispatch.queue.size > 0)
        if self.watched:
            with self._lock:
                if instance.state is State.ABANDONED:
                    return False
                instance.returned = True  # from now on the watchdog leaves this batch alone
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
        return True

    # ----------------------------------------------------------------- hung batches
    def _watch(self) -> None:
        """The watchdog's loop (NOTE [hung backends])."""
        limit = self.settings.compute_timeout
        poll = max(0.005, min(limit / 4, 0.25))
        while not self._stopping.wait(poll):
            now = self._clock()
            with self._lock:
                if self._dispatch.closed:
                    return
                hung = [
                    i
                    for i in self.instances
                    if i.state is State.RUNNING
                    and i.current
                    and not i.returned
                    and now - i.started > limit
                    and not getattr(i.backend, "starting", False)  # a worker process being started
                ]
                given_up = [self._give_up(instance) for instance in hung]
            for instance, batch, replacement in given_up:
                self._fail_hung(instance, batch, replacement)

    def _give_up(self, instance: Instance) -> tuple[Instance, list[Task], Instance | None]:
        """Give up ``instance``'s batch (requires the lock): a process instance stays, its
        worker to be killed; a thread instance is abandoned and a replacement planned."""
        dispatcher = self._dispatch
        dispatcher.stats.timed_out += 1
        batch = list(instance.current or ())
        instance.returned = True
        if self.settings.process:
            return instance, batch, None
        instance.state = State.ABANDONED
        dispatcher.stats.abandoned += 1
        self.instances.remove(instance)
        self.abandoned.append(instance)
        replacement = Instance(self.config.name, self._next_index, instance.group, instance.tree)
        self._next_index += 1
        self.instances.append(replacement)
        for group in dispatcher.groups:
            if group.index == instance.group:
                group.instances.remove(instance)
                group.instances.append(replacement)
        return instance, batch, replacement

    def _fail_hung(self, instance: Instance, batch: list[Task], replacement: Instance | None) -> None:
        """Fail the given-up batch's requests, then kill the worker process or start the
        abandoned thread instance's replacement."""
        limit_ms = round(self.settings.compute_timeout * 1e3, 3)
        fate = (
            "its worker process is killed and restarted"
            if replacement is None
            else f"the instance is abandoned and replaced by instance {replacement.index}"
        )
        error = ComputeTimeout(
            f"node {self.config.name!r}, instance {instance.index}: a batch of {len(batch)} ran longer than "
            f"compute_timeout ({limit_ms} ms); {fate}",
            node=self.config.name,
            backend=instance.label,
            instance=instance.index,
        )
        for task in batch:
            deliver(task, error)
        if replacement is None:
            kill = getattr(instance.backend, "kill", None)
            if kill is not None:
                kill()
            return
        if instance.thread is not None:
            instance.thread.name += "-abandoned"
        replacement.thread = threading.Thread(
            target=self._serve_replacement,
            args=(replacement,),
            name=f"pipeserve-{self.config.name}-{replacement.index}",
            daemon=True,
        )
        replacement.thread.start()

    def _serve_replacement(self, instance: Instance) -> None:
        """A replacement instance's worker: build, join the rotation, serve."""
        try:
            self._build(instance)
        except BaseException:  # the node runs on with one instance fewer
            with self._lock:
                instance.state = State.CLOSED
            name, index = self.config.name, instance.index
            log.exception("node %r: instance %d could not be built to replace an abandoned one", name, index)
            return
        with self._lock:
            self._dispatch.idle(instance)
            self._dispatch.dispatch(self._clock(), instance)
            act(self._dispatch)
        self._serve(instance)

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
        of those still running one (NOTE [shutdown]). Abandoned instances are not waited for."""
        self._stopping.set()
        end = self._clock() + timeout
        for instance in self.instances:
            thread = instance.thread
            if thread is None or thread is threading.current_thread():
                continue
            try:
                thread.join(max(0.0, end - self._clock()))
            except RuntimeError:
                # A replacement's thread created but not started yet (the watchdog starts it
                # outside the lock) has nothing to finish, and join() refuses it.
                continue
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


def _restarted(instance: Instance, clock: Clock) -> None:
    """A process instance's worker was restarted within its batch (NOTE [hung backends])."""
    instance.started = clock()
