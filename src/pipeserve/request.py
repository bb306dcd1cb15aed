"""One admitted request: its future, its deadline, and the exactly-once completion gate.

NOTE [ownership]
Once :meth:`pipeserve.Pipe.submit` accepts an item, the pipe owns the request until its future
is resolved: on success, error, deadline or close. Whoever calls :meth:`Request.succeed` or
:meth:`Request.fail` first wins; every later call is a no-op that returns False. The caller's
dict is only touched by the winner of a success, so on error it stays as it was passed in.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from .errors import RequestTimeout
from .tracing import Trace

__all__ = ["DeadlineWatch", "InFlight", "Request"]

Item = dict[str, Any]
Clock = Callable[[], float]


class InFlight:
    """How many admitted requests have no outcome yet (NOTE [drain] in :mod:`pipeserve.pipe`).

    On every request's path, so ``enter`` and ``leave`` are C-level counter increments (atomic
    under the GIL, no lock, no Python frame); only :meth:`wait_idle`, at shutdown, reads them,
    polling with a bounded wait.
    """

    POLL = 0.002  # seconds between looks while draining

    def __init__(self) -> None:
        self._entered = itertools.count()
        self._left = itertools.count()
        self.enter: Callable[[], object] = self._entered.__next__
        self.leave: Callable[[], object] = self._left.__next__

    @property
    def count(self) -> int:
        """Requests admitted and not yet finished."""
        return _peek(self._entered) - _peek(self._left)

    def wait_idle(self, timeout: float, clock: Clock) -> bool:
        """Block until no request is in flight or ``timeout`` seconds of ``clock`` pass; True if
        none is."""
        end = clock() + timeout
        while self.count:
            left = end - clock()
            if left <= 0:
                return False
            time.sleep(min(self.POLL, left))
        return True


def _peek(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would give, without taking it."""
    return int(repr(counter)[len("count(") : -1] or 0)


_births = itertools.count()  # next() on it is atomic under the GIL


class Request:
    """An admitted item on its way through the pipe.

    Attributes:
        caller_item: the caller's dict, updated in place on success.
        item: the working copy the nodes see (without a stale ``result``).
        future: for ``submit``/``acall`` (see :meth:`attach_future`), resolves to
            ``caller_item`` or to the error; blocking calls wait with :meth:`wait` instead, which
            costs a lock rather than a Future.
        error: the error delivered, once finished.
        deadline: a reading of the pipe's clock after which the request fails, or None.
        entry: the node the request starts at.
        caller: the thread blocked on this request (a blocking call), or None.
        inflight: told when the request gets its outcome, if given.
        trace: the request's trace when it is sampled (NOTE [traces] in :mod:`pipeserve.tracing`).
        watch: told ``(request, error)`` when the request gets its outcome, before its caller
            learns it (the pipe's observers and the trace's end), or None: one test on the path
            of an unwatched request.
        started: the clock reading at admission (set only where ``watch`` is).
        birth: its place in the order requests were made, process-wide: its age at every node
            (NOTE [fair order] in :mod:`pipeserve.batching`).
    """

    __slots__ = (
        "_done",
        "_gate",
        "birth",
        "caller",
        "caller_item",
        "deadline",
        "entry",
        "error",
        "future",
        "inflight",
        "item",
        "started",
        "trace",
        "watch",
    )

    def __init__(self, caller_item: Item, deadline: float | None, entry: str, inflight: InFlight | None = None) -> None:
        self.caller_item = caller_item
        self.birth = next(_births)
        self.item = dict(caller_item)
        self.item.pop("result", None)
        self.deadline = deadline
        self.entry = entry
        self.caller: int | None = None
        self.future: Future[Item] | None = None
        self.error: BaseException | None = None
        self.inflight = inflight
        self.trace: Trace | None = None
        self.watch: Callable[[Request, BaseException | None], None] | None = None
        self.started: float  # set by whoever sets ``watch``
        self._gate = threading.Lock()
        self._done = threading.Lock()  # held until an outcome is delivered
        self._done.acquire()

    def attach_future(self) -> Future[Item]:
        """Create the Future (before the request is started)."""
        self.future = Future()
        return self.future

    def wait(self, timeout: float | None) -> bool:
        """Block until an outcome is delivered or ``timeout`` seconds pass; True if delivered."""
        if self._done.acquire(timeout=-1 if timeout is None else timeout):
            self._done.release()  # let any other waiter through too
            return True
        return False

    @property
    def span(self) -> int:
        """The span node visits of this request are children of (its trace's root span)."""
        return self.trace.root_id if self.trace is not None else 0

    @property
    def cancelled(self) -> bool:
        """The caller cancelled the request's Future."""
        return self.future is not None and self.future.cancelled()

    @property
    def finished(self) -> bool:
        """True once an outcome was delivered (or the caller cancelled the future)."""
        return self._gate.locked() or (self.future is not None and self.future.cancelled())

    def expired(self, now: float) -> bool:
        """True if the deadline has passed at clock reading ``now``."""
        return self.deadline is not None and now >= self.deadline

    def succeed(self, output: Item) -> bool:
        """Deliver ``output`` as the result: the caller's dict becomes ``output``.

        Returns False (and changes nothing) if an outcome was already delivered.
        """
        if not self._gate.acquire(blocking=False):
            return False
        caller = self.caller_item
        if output is not caller:
            caller.clear()
            caller.update(output)
        return self._resolve(caller, None)

    def fail(self, error: BaseException) -> bool:
        """Deliver ``error``. Returns False if an outcome was already delivered."""
        if not self._gate.acquire(blocking=False):
            return False
        return self._resolve(None, error)

    def time_out(self) -> bool:
        """Fail with :class:`~pipeserve.errors.RequestTimeout` (if still pending)."""
        return self.fail(RequestTimeout(f"request deadline passed (entry node {self.entry!r})", node=self.entry))

    def _resolve(self, result: Item | None, error: BaseException | None) -> bool:
        self.error = error
        # Observers and the trace learn the outcome before the caller does, so that a count read
        # after a call returns includes it.
        try:
            if self.watch is not None:
                # The Future is claimed first (a later cancel() fails), so that what the watchers
                # are told is what the caller gets: a cancellation that came first is reported
                # as one (``cancelled`` is then true).
                if self.future is not None:
                    self.future.set_running_or_notify_cancel()
                self.watch(self, error)
        finally:
            self._done.release()  # whatever a watcher does, the caller learns the outcome
        if self.inflight is not None:
            self.inflight.leave()
        if self.future is None:
            return True
        try:
            if error is None:
                self.future.set_result(result)  # type: ignore[arg-type]
            else:
                self.future.set_exception(error)
        except InvalidStateError:  # the caller cancelled the future meanwhile
            return False
        return True


class DeadlineWatch:
    """Fails requests whose deadline passes, even while they wait in a queue.

    One daemon thread, started on the first request that has a deadline and stopped by
    :meth:`close`. Blocking calls also time out on their own; this serves ``submit`` and
    ``acall``, whose callers may not be waiting.

    Args:
        clock: the pipe's clock, which the deadlines are readings of.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Request]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._count = 0

    def watch(self, request: Request) -> None:
        """Time ``request`` out at its deadline unless it finishes first."""
        if request.deadline is None:
            return
        with self._cond:
            if self._closed:
                return
            self._count += 1
            heapq.heappush(self._heap, (request.deadline, self._count, request))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pipeserve-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is request:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = self._clock()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][2].finished):
                    _, _, request = heapq.heappop(self._heap)
                    if not request.finished:
                        request.time_out()
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def close(self) -> None:
        """Stop the thread (pending requests are failed by the pipe's close)."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
