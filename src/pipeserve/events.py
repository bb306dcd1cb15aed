"""TorchPipe-style asynchronous calls: an item carrying ``"event": pipeserve.Event()``.

event = pipeserve.Event()
item = {"data": x, "event": event}
pipe(item)          # returns at once
event.wait()        # blocks until done; re-raises the request's error, if any
item["result"]
"""

from __future__ import annotations

import threading

__all__ = ["Event"]


class Event:
    """Completion of one asynchronous call; see the module docstring."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self.error: BaseException | None = None

    def is_set(self) -> bool:
        """True once the request has finished (successfully or not)."""
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request finishes or ``timeout`` passes; False on timeout.

        Raises:
            the request's error, if it failed.
        """
        if not self._flag.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        return True

    def set_outcome(self, error: BaseException | None) -> None:
        """Record the outcome (called by the pipe, once)."""
        self.error = error
        self._flag.set()
