"""``PipeHandle``: a pipeserve application on Ray Serve, called from Python as a pipe is.

::

    handle = pipeserve.ray.run("ocr")          # or PipeHandle(serve.get_app_handle("pipeserve"))
    item = {"data": image_bytes}
    handle(item)                               # blocks; item["result"] is set, as pipe(item) does
    await handle.acall({"data": image_bytes})  # from asyncio
    handle([{"data": a}, {"data": b}])         # several, batched together in one replica

Every item gets exactly one outcome: its changes applied in place, or an error from pipeserve's
hierarchy (the pipe's own, as raised in the replica; RemoteError naming the deployment when the
call could not complete). A call whose replica died before answering is sent again, to another
replica, while its deadline allows (without a deadline: ``retries`` times in all): a pipeline's
nodes compute, they do not act on the world, so running one twice is safe.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import InputError, RemoteError, RequestTimeout
from .hop import GRACE, NO_DEADLINE_WAIT, Retries, retryable_errors
from .transfer import apply, outgoing

__all__ = ["PipeHandle"]

Item = dict[str, Any]


class PipeHandle:
    """Calls the ingress of a pipeserve application.

    Args:
        handle: the ingress deployment's ``DeploymentHandle`` (what ``serve.run`` returns).
        model: the model to call (None: the application's only one).
        retries: attempts in all without a deadline, when replicas are lost (at least 1).
    """

    def __init__(self, handle: Any, model: str | None = None, *, retries: int = 3) -> None:
        self.deployment_handle = handle
        self.model = model
        self.retries = max(1, retries)
        self._retryable = retryable_errors()

    def __call__(self, item: Item | list[Item], *, timeout: float | None = None) -> Any:
        """Process ``item`` (or a list of items), blocking; like :meth:`pipeserve.Pipe.__call__`
        the dicts are updated in place and returned; for a list, the first failing item's error
        (in list order) is raised once all are done.

        Raises:
            RequestError: the request failed (the pipe's error, or RemoteError).
        """
        items = _items(item)
        if not items:
            return item
        end = None if timeout is None else time.monotonic() + timeout
        retries = Retries(end, self.retries)
        while True:
            retries.attempts += 1
            response = self._send(items, end)
            try:
                replies = response.result(timeout_s=self._wait(end))
            except TimeoutError:
                response.cancel()
                raise RequestTimeout(_late(timeout)) from None
            except self._retryable as exc:
                time.sleep(self._pause(retries, exc))
                continue
            except Exception as exc:
                raise self._failed(exc) from exc
            return self._settle(item, items, replies)

    async def acall(self, item: Item | list[Item], *, timeout: float | None = None) -> Any:
        """:meth:`__call__` for asyncio, without blocking the event loop; cancelling the task
        cancels the request (its items still queued in the replica are dropped)."""
        items = _items(item)
        if not items:
            return item
        end = None if timeout is None else time.monotonic() + timeout
        retries = Retries(end, self.retries)
        while True:
            retries.attempts += 1
            response = self._send(items, end)
            try:
                replies = await asyncio.wait_for(_awaited(response), self._wait(end))
            except (TimeoutError, asyncio.TimeoutError):
                response.cancel()
                raise RequestTimeout(_late(timeout)) from None
            except asyncio.CancelledError:
                response.cancel()
                raise
            except self._retryable as exc:
                await asyncio.sleep(self._pause(retries, exc))
                continue
            except Exception as exc:
                raise self._failed(exc) from exc
            return self._settle(item, items, replies)

    # ----------------------------------------------------------------- helpers
    def _send(self, items: list[Item], end: float | None) -> Any:
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            raise RequestTimeout("the deadline passed before the application answered")
        return self.deployment_handle.call.remote(self.model, [outgoing(item) for item in items], left)

    @staticmethod
    def _wait(end: float | None) -> float:
        return NO_DEADLINE_WAIT if end is None else max(0.0, end - time.monotonic()) + GRACE

    def _pause(self, retries: Retries, error: BaseException) -> float:
        """The pause before sending a call again whose replica was lost.

        Raises:
            RemoteError: no attempt is left.
        """
        pause = retries.pause()
        if pause is None:
            raise RemoteError(
                f"the application's replicas were lost {retries.attempts} time(s): {type(error).__name__}",
                peer=self._peer(),
            ) from error
        return pause

    def _failed(self, error: BaseException) -> BaseException:
        from .. import PipeServeError

        cause = getattr(error, "cause", None)
        if isinstance(cause, PipeServeError):  # raised by the replica as a whole (no such model...)
            return cause
        if isinstance(error, PipeServeError):
            return error
        return RemoteError(f"the call failed: {type(error).__name__}: {error}", peer=self._peer())

    def _peer(self) -> str:
        name = getattr(self.deployment_handle, "deployment_name", None) or "ingress"
        app = getattr(self.deployment_handle, "app_name", None)
        return f"{app}/{name}" if app else str(name)

    @staticmethod
    def _settle(item: Item | list[Item], items: list[Item], replies: list[Any]) -> Any:
        first: BaseException | None = None
        for target, reply in zip(items, replies, strict=True):
            if isinstance(reply, BaseException):
                first = first or reply
            else:
                apply(target, reply)
        if first is not None:
            raise first
        return item


async def _awaited(response: Any) -> Any:
    return await response


def _items(item: Any) -> list[Item]:
    """The items of a call, checked as a pipe checks them.

    Raises:
        InputError: an item that is not a dict.
    """
    items = item if isinstance(item, list) else [item]
    for entry in items:
        if not isinstance(entry, dict):
            raise InputError(f"an item is a dict, got {type(entry).__name__}")
    return items


def _late(timeout: float | None) -> str:
    if timeout is None:
        return f"the application did not answer within {NO_DEADLINE_WAIT:.0f} s"
    return f"the application did not answer within the deadline ({timeout} s)"
