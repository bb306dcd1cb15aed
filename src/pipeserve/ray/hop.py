"""``RayHop``: the node that stands, in an ingress replica's pipe, for a node placed on another
Ray Serve deployment (NOTE [ray plan] in :mod:`pipeserve.ray.plan`). The planner writes its
keys; users never configure it by hand.

NOTE [ray hops]
A batch the hop node forms leaves as one call to a replica of the part (``run``), with the
items as they are (but their caller-local keys), the seconds left before the batch's earliest
deadline and the batch's ``traceparent`` when it is traced (the part's spans join the trace; an
untraced batch stays untraced there). The part's pipe runs the original node on them, batching
them with other callers', and answers with each item's changes or its error, which the hop
applies or fails that item with (the others succeed). The hop waits at most the time left (plus
a grace for the answer to travel): past it the batch fails with RequestTimeout. As with the
Remote backend (NOTE [remote calls]), a batch carries its earliest deadline: an item without one
that batches with a short one fails with it if the part is late. A replica that dies or is
unreachable before answering is retried on another, with backoff (20 ms doubling, at most 1 s),
while the deadline allows (without one: ``retries`` times in all, default 3); then the items
fail with RemoteError naming the deployment. A retried node may have run twice, on the dead
replica and on the next, but every item gets one outcome. The ingress's health check never
counts a hop's instance as stuck: it waits as long as its part takes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import Backend, ConfigError, Options, PartialFailure, RemoteError, RequestError, RequestTimeout
from .transfer import apply, outgoing

__all__ = ["RayHop", "Retries", "connect", "disconnect", "retryable_errors"]

FIRST_BACKOFF, MAX_BACKOFF = 0.02, 1.0  # seconds between retries
GRACE = 1.0  # seconds an answer may take to travel back after the part's deadline passed
NO_DEADLINE_WAIT = 600.0  # seconds to wait for an answer when the batch has no deadline
CONNECT_TIMEOUT = 120.0  # seconds to wait for the part at start (its replicas may be starting)

# The parts' handles, by (application link, deployment): set by the ingress replica before it
# builds its pipes, read by the hops those pipes build.
_handles: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def connect(link: str, handles: Mapping[str, Any]) -> None:
    """Make the parts' DeploymentHandles (by deployment name) known to the hops of ``link``."""
    with _lock:
        for name, handle in handles.items():
            _handles[(link, name)] = handle


def disconnect(link: str) -> None:
    """Forget the handles of ``link`` (the replica is going away)."""
    with _lock:
        for key in [key for key in _handles if key[0] == link]:
            del _handles[key]


class Retries:
    """When a call whose replica was lost goes again (NOTE [ray hops]): after a pause of 20 ms
    doubling to at most 1 s, while the deadline ``end`` (a monotonic reading) leaves room for the
    pause, or without one until ``most`` attempts were made. The caller counts ``attempts``."""

    def __init__(self, end: float | None, most: int) -> None:
        self.end = end
        self.most = most
        self.attempts = 0
        self._delay = FIRST_BACKOFF

    def pause(self) -> float | None:
        """After a lost attempt: the seconds to wait before the next, or None when none is left."""
        left = None if self.end is None else self.end - time.monotonic()
        if (left is not None and left <= self._delay) or (left is None and self.attempts >= self.most):
            return None
        delay, self._delay = self._delay, min(2 * self._delay, MAX_BACKOFF)
        return delay


def retryable_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the replica was lost or unreachable before it answered."""
    import ray.exceptions

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError")
    found: list[type[BaseException]] = [getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n)]
    try:
        import ray.serve.exceptions as serve_errors

        found.extend(getattr(serve_errors, n) for n in ("DeploymentUnavailableError",) if hasattr(serve_errors, n))
    except ImportError:  # pragma: no cover - ray without serve
        pass
    return tuple(found)


class RayHop(Backend):
    """Runs its node on a replica of another deployment (NOTE [ray hops]).

    Keys (written by the planner): ``ray_deployment``, ``ray_link``, ``ray_node``; ``retries``
    (3: attempts without a deadline); ``max`` (at most the part's node's).
    """

    cpu_weight = 0  # its instances wait on other replicas: no share of the CPU budget

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.deployment = str(params.get("ray_deployment", ""))
        self.target = str(params.get("ray_node", options.node))
        with _lock:
            handle = _handles.get((str(params.get("ray_link", "")), self.deployment))
        if handle is None:
            raise ConfigError(
                f"a RayHop to deployment {self.deployment!r} runs only inside a pipeserve.ray application",
                node=options.node,
            )
        self.handle = handle
        self.retries = max(1, int(params.get("retries", 3)))
        self.retryable = retryable_errors()
        try:
            described = handle.describe.remote(self.target).result(timeout_s=CONNECT_TIMEOUT)
        except Exception as exc:
            raise ConfigError(f"deployment {self.deployment!r} did not answer: {exc}", node=options.node) from exc
        own = int(params.get("max", 0) or 0)
        self.node_max = min(own, described["max"]) if own else int(described["max"])

    def max(self) -> int:
        return self.node_max

    def forward(self, items: list[dict[str, Any]]) -> None:
        replies = self._call([outgoing(item) for item in items], self.options.remaining())
        failures: dict[int, BaseException] = {}
        for index, (item, reply) in enumerate(zip(items, replies, strict=True)):
            if isinstance(reply, BaseException):
                failures[index] = reply
            else:
                apply(item, reply)
        if failures:
            raise PartialFailure(failures)

    def _error(self, what: str) -> RemoteError:
        return RemoteError(f"deployment {self.deployment!r} {what}", node=self.options.node, peer=self.deployment)

    def _call(self, payload: list[dict[str, Any]], remaining: float | None) -> list[Any]:
        """The part's replies, retrying lost replicas while the deadline allows."""

        def fail_all(error: RequestError) -> PartialFailure:
            return PartialFailure(dict.fromkeys(range(len(payload)), error))

        end = None if remaining is None else time.monotonic() + remaining
        retries = Retries(end, self.retries)
        while True:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                late = f"node {self.options.node!r}: the deadline passed before deployment {self.deployment!r} answered"
                raise fail_all(RequestTimeout(late, node=self.options.node))
            retries.attempts += 1
            response = self.handle.run.remote(self.target, payload, left, self.options.traceparent())
            try:
                replies: list[Any] = response.result(timeout_s=NO_DEADLINE_WAIT if left is None else left + GRACE)
            except TimeoutError:
                response.cancel()
                if left is None:
                    raise fail_all(self._error(f"did not answer within {NO_DEADLINE_WAIT:.0f} s")) from None
                late = f"node {self.options.node!r}: deployment {self.deployment!r} did not answer before the deadline"
                raise fail_all(RequestTimeout(late, node=self.options.node)) from None
            except self.retryable as exc:
                pause = retries.pause()
                if pause is None:
                    lost = f"lost after {retries.attempts} attempt(s): {type(exc).__name__}"
                    raise fail_all(self._error(lost)) from exc
                time.sleep(pause)
                continue
            except Exception as exc:
                raise fail_all(self._error(f"failed: {type(exc).__name__}: {exc}")) from exc
            if len(replies) != len(payload):
                raise fail_all(self._error(f"answered {len(replies)} items for {len(payload)}"))
            return replies
