"""Jump and MapReduce: the sub-requests of one node, and gathering their outcomes.

NOTE [sub-requests]
``Jump`` and ``MapReduce`` nodes run no instance. The walk reaching one splits its input
(:func:`split`: the item itself for Jump, one shallow copy per element of the ``split`` list for
MapReduce) and starts one child walk per part over the jump target's subgraph; the children's
first tasks are queued together, so that sub-items of every request batch together downstream.
A :class:`Gather` collects the children's outcomes in any order; the last to finish gives the
node its outcome: the child's output (Jump) or the input with each ``merge`` key set to the list
of the children's values, in split order (MapReduce, :func:`merge`). A failing child fails the
node with the error of the lowest failing index, its message naming that index. An empty split
list completes the node at once with empty lists.

This module knows nothing of walks: the executor hands it a callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .errors import RequestError, locate
from .graph import JUMP, GraphNode

__all__ = ["Gather", "merge", "split"]

Item = dict[str, Any]
Outcome = Callable[[Item | None, BaseException | None], None]


def split(node: GraphNode, item: Item) -> list[Item]:
    """The children's inputs for ``item`` at ``node`` (NOTE [sub-requests]).

    Raises:
        RequestError: a MapReduce input whose ``split`` key does not hold a list.
    """
    if node.kind == JUMP:
        return [item]
    values = item.get(node.split)
    if not isinstance(values, (list, tuple)):
        raise RequestError(
            f"node {node.name!r}: expected a list under {node.split!r}, got {type(values).__name__}", node=node.name
        )
    return [{**item, node.split: value} for value in values]


def merge(node: GraphNode, item: Item, outputs: Sequence[Item | None]) -> Item:
    """The node's output from its children's ``outputs`` in split order."""
    if node.kind == JUMP:
        return outputs[0] or {}
    merged = dict(item)
    for key in node.merge:
        merged[key] = [(output or {}).get(key) for output in outputs]
    return merged


class Gather:
    """The outcomes of one node's children; the last to finish calls ``on_done`` once with the
    node's output or error.

    Args:
        node: the Jump/MapReduce node; item: its input; count: how many children.
        on_done: receives ``(output, None)`` or ``(None, error)``.
    """

    def __init__(self, node: GraphNode, item: Item, count: int, on_done: Outcome) -> None:
        self.node = node
        self.item = item
        self.on_done = on_done
        self._lock = threading.Lock()
        self._left = count
        self._outputs: list[Item | None] = [None] * count
        self._error: tuple[int, BaseException] | None = None

    def finisher(self, index: int) -> Callable[[Any, Item | None, BaseException | None], None]:
        """The callback child ``index`` finishes with: ``(child, output, error)``."""

        def finish(child: Any, output: Item | None, error: BaseException | None) -> None:
            self.finished(index, output, error)

        return finish

    def finished(self, index: int, output: Item | None, error: BaseException | None) -> None:
        """Child ``index`` finished; the last one completes the node."""
        with self._lock:
            if error is not None and (self._error is None or index < self._error[0]):
                self._error = (index, error)
            self._outputs[index] = output
            self._left -= 1
            if self._left:
                return
        if self._error is not None:
            failed, cause = self._error
            context = f"node {self.node.name!r}, sub-item {failed} of {len(self._outputs)}"
            self.on_done(None, locate(cause, node=self.node.name, context=context))
        else:
            self.on_done(merge(self.node, self.item, self._outputs), None)
