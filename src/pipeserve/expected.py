"""Callers expected back at an entry node.

NOTE [expected callers]
At an entry node, "can more items come?" has a second source besides upstream work: blocking
callers whose call just returned. A closed-loop client comes straight back, so after a blocking
call returns its thread counts as *expected* until it calls again or its expectation lapses. An
expectation lasts four times the longest recent return gap (a decaying maximum of how long
callers took to come back, plus ``SLACK``), never longer than the batching window; so a client
that stopped calling delays the others by about a return gap, not a whole window. (A factor of 2
let expectations lapse under GIL contention: 0.87 of the ideal at saturation instead of 0.95.)
An idle instance with a partial batch waits while expected callers may still fill it, and
releases the moment none is left: 64 closed-loop clients regroup into full batches instead of
fragments, two pair up, and a lone client never waits. A blocking caller also runs inline only
when nobody is expected. With ``batching_timeout = 0`` (the default) nothing is tracked and
release is purely work-conserving. The expectation is recorded when the result is delivered,
before the caller's thread even wakes, so the node's next decision already knows.
"""

from __future__ import annotations

__all__ = ["ExpectedCallers"]

SLACK = 0.0002  # seconds added to the return-gap estimate
FACTOR = 4  # an expectation lasts this many times the longest recent return gap
DECAY = 0.995  # per observed return: how fast the longest-gap estimate forgets


class ExpectedCallers:
    """Which caller threads are expected back, and for how long. Not thread-safe: the owning
    node calls it under its lock.

    Args:
        window: the node's batching window in seconds (the longest an expectation lasts).
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._returned: dict[int, float] = {}  # caller -> when its call returned, oldest first
        self._gap = 0.0  # decaying maximum of observed return gaps, seconds

    def __bool__(self) -> bool:
        return bool(self._returned)

    def returned(self, caller: int, now: float) -> None:
        """The call of ``caller`` returned at ``now``: expect it back."""
        self._returned.pop(caller, None)  # re-insert so the dict stays ordered by time
        self._returned[caller] = now

    def back(self, caller: int, now: float) -> None:
        """``caller`` called again at ``now``: no longer expected; learn its return gap."""
        returned = self._returned.pop(caller, None)
        if returned is not None:
            self._gap = max(now - returned, self._gap * DECAY)

    def lasts(self) -> float:
        """How long an expectation lasts now."""
        return min(self.window, FACTOR * self._gap + SLACK)

    def count(self, now: float) -> int:
        """How many callers are expected back at ``now`` (lapsed expectations are dropped)."""
        returned = self._returned
        lasts = self.lasts()
        while returned:
            oldest = next(iter(returned))
            if now - returned[oldest] < lasts:
                break
            del returned[oldest]
        return len(returned)

    def next_lapse(self) -> float | None:
        """When the oldest expectation lapses, if any is held."""
        for returned in self._returned.values():
            return returned + self.lasts()
        return None
