"""Items across Ray calls: what goes (everything but the caller's own objects) and what comes
back (only what the far side changed), so that a hop or a handle call updates the caller's item
in place, as a pipe does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LOCAL_KEYS", "Change", "apply", "changes", "outgoing"]

# Keys that belong to the caller's process: an Event to signal, a per-request context object.
LOCAL_KEYS = frozenset({"event", "context"})

#: What a call did to one item: the keys set (new values) and the keys removed.
Change = tuple[dict[str, Any], tuple[str, ...]]


def outgoing(item: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``item`` to send, without :data:`LOCAL_KEYS`."""
    return {key: value for key, value in item.items() if key not in LOCAL_KEYS}


def changes(before: Mapping[str, Any], item: Mapping[str, Any]) -> Change:
    """What changed in ``item`` since ``before`` (a shallow copy taken then, which keeps the old
    values alive so that identities stay meaningful): values set anew (by identity: an array
    changed in place is not seen; pipeserve's nodes set keys) and keys removed."""
    updated = {key: value for key, value in item.items() if key not in before or before[key] is not value}
    removed = tuple(key for key in before if key not in item)
    return updated, removed


def apply(item: dict[str, Any], change: Change) -> None:
    """Make ``item`` what the far side's copy became."""
    updated, removed = change
    item.update(updated)
    for key in removed:
        item.pop(key, None)
