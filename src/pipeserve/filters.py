"""Filters: per-item decisions taken before a stage or node runs (SPEC 4).

A filter is a callable ``filter(item) -> Status`` (a :class:`Status` or its name). It may
change the item, as ``swap`` does. Register your own with
:func:`pipeserve.register_filter`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

__all__ = ["BUILTIN_FILTERS", "Filter", "Status", "as_status"]


class Status(enum.Enum):
    """What a filter decided for one item.

    * ``Run``: run the stage on the item.
    * ``Skip``: do not run it; the item passes on unchanged as the stage's output.
    * ``Break``: end the request now, with this dict as its output.
    * ``SerialSkip``: skip this node and the chain of single-successor nodes after it
      (inside ``Sequential``: like ``Break`` for that item).
    * ``SubGraphSkip``: skip the largest subgraph rooted here whose nodes have all their
      predecessors inside it (inside ``Sequential``: like ``Break`` for that item).
    * ``Error``: fail the item with :class:`~pipeserve.errors.FilterError`.
    """

    Run = "Run"
    Skip = "Skip"
    Break = "Break"
    SerialSkip = "SerialSkip"
    SubGraphSkip = "SubGraphSkip"
    Error = "Error"


Filter = Callable[[dict[str, Any]], Any]


def as_status(value: Any, filter_name: str) -> Status:
    """Normalise what a filter returned (a Status or its name)."""
    if isinstance(value, Status):
        return value
    try:
        return Status(value)
    except ValueError:
        raise TypeError(
            f"filter {filter_name!r} returned {value!r}; expected a pipeserve.Status "
            f"or one of {[s.value for s in Status]}"
        ) from None


def _swap(item: dict[str, Any]) -> Status:
    """Move ``result`` into ``data``; without a result the request ends (``Break``)."""
    if "result" not in item:
        return Status.Break
    item["data"] = item.pop("result")
    return Status.Run


def _or(item: dict[str, Any]) -> Status:
    """Run only when there is no ``result`` yet: a fallback path."""
    return Status.Skip if "result" in item else Status.Run


def _constant(status: Status) -> Filter:
    def decide(item: dict[str, Any]) -> Status:
        return status

    decide.__name__ = status.value
    decide.__doc__ = f"Always {status.value}."
    return decide


BUILTIN_FILTERS: dict[str, Filter] = {s.value: _constant(s) for s in Status}
BUILTIN_FILTERS["swap"] = _swap
BUILTIN_FILTERS["or"] = _or
