"""Basic built-in backends: pass-through, composition, sleeping, key helpers, test helpers.

* ``Identity``: ``result = data``.
* ``Sequential`` (alias ``S``): ``S[A,B,C]`` runs the stages in turn on each item, with a
  filter before each stage (``(f)B``; default ``swap`` for every stage but the first, which has
  none). ``Skip`` passes the item on unchanged; ``Break``, ``SerialSkip`` and ``SubGraphSkip``
  end the chain for that item only; ``Error`` fails that item only.
* ``Sleep``: sleeps ``sleep_ms + per_item_ms * len(batch)`` milliseconds (releasing the GIL, as
  native compute does), then passes data through. Models GIL-free work in tests and benchmarks.
* ``Add`` (``add = "k:v,k2:v2"``), ``Remove`` (``remove = "k,k2"``), ``Copy`` (``copy = "a:b"``),
  ``Move`` (``move = "a:b"``): key helpers. They pass ``data`` through as ``result`` unless they
  themselves wrote, moved or removed ``result``.
* ``RuntimeError`` / ``ValueError``: raise that exception, for every item or only for items
  whose ``str(data)`` is listed in ``error_on = "a,b"`` (others pass through). For tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..backend import Backend, Child, Options, PartialFailure
from ..config import get_float, get_list
from ..errors import BackendError, ConfigError, FilterError
from ..filters import BUILTIN_FILTERS, Status, as_status

__all__ = [
    "Add",
    "Jump",
    "MapReduce",
    "Copy",
    "Identity",
    "Move",
    "RaiseRuntimeError",
    "RaiseValueError",
    "Remove",
    "Sequential",
    "Sleep",
]

Item = dict[str, Any]


class Identity(Backend):
    """``result = data`` for every item."""


class Sequential(Backend):
    """Runs its child stages in turn; see the module docstring for filters.

    Its batch range is the intersection of its stages' ranges.
    """

    stages: tuple[Child, ...]

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        if not options.children:
            raise ConfigError("Sequential needs at least one stage: S[A,B,...]", node=options.node)
        self.stages = tuple(options.children)
        if self.min() > self.max():
            ranges = ", ".join(f"{c.name}: {c.backend.min()}..{c.backend.max()}" for c in self.stages)
            raise ConfigError(f"the stages accept no common batch size ({ranges})", node=options.node)

    def min(self) -> int:
        return max(child.backend.min() for child in self.stages)

    def max(self) -> int:
        return min(child.backend.max() for child in self.stages)

    def forward(self, items: list[Item]) -> None:
        active = list(range(len(items)))
        failures: dict[int, BaseException] = {}
        for position, stage in enumerate(self.stages):
            decide = stage.filter or (BUILTIN_FILTERS["swap"] if position else None)
            filter_name = stage.filter_name or ("swap" if position else "")
            runs: list[int] = []
            kept: list[int] = []
            for index in active:
                status = Status.Run if decide is None else as_status(decide(items[index]), filter_name)
                if status is Status.Run:
                    runs.append(index)
                    kept.append(index)
                elif status is Status.Skip:
                    kept.append(index)
                elif status is Status.Error:
                    failures[index] = FilterError(f"filter {filter_name!r} before {stage.name!r}")
                # Break, SerialSkip, SubGraphSkip: the item leaves the chain as it is.
            if runs:
                failed = self._run_stage(stage, [items[i] for i in runs])
                for local_index, error in failed.items():
                    failures[runs[local_index]] = error
                kept = [i for i in kept if i not in failures]
            active = kept
        if failures:
            raise PartialFailure(failures)

    @staticmethod
    def _run_stage(stage: Child, batch: list[Item]) -> dict[int, BaseException]:
        try:
            stage.backend.forward(batch)
        except PartialFailure as partial:
            return partial.failures
        except BackendError as exc:  # a nested composite already named the failing stage
            if len(batch) > 1:
                raise
            return {0: exc}
        except Exception as exc:
            if len(batch) > 1:
                raise  # the node re-runs the batch item by item to isolate the culprits
            return {0: BackendError(exc, backend=stage.name)}
        return {}


class Sleep(Backend):
    """Sleeps ``sleep_ms + per_item_ms * batch`` milliseconds, then ``result = data``."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.fixed = get_float(params, "sleep_ms", 0.0, node=options.node, minimum=0.0) / 1e3
        self.per_item = get_float(params, "per_item_ms", 0.0, node=options.node, minimum=0.0) / 1e3

    def forward(self, items: list[Item]) -> None:
        delay = self.fixed + self.per_item * len(items)
        if delay > 0:
            time.sleep(delay)
        for item in items:
            item["result"] = item["data"]


def _pairs(params: Mapping[str, Any], key: str, node: str) -> list[tuple[str, str]]:
    pairs = []
    for entry in get_list(params, key, node=node):
        source, sep, target = entry.partition(":")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"expected 'key:value' entries, got {entry!r}", node=node, key=key)
        pairs.append((source.strip(), target.strip()))
    if not pairs:
        raise ConfigError("expected at least one 'key:value' entry", node=node, key=key)
    return pairs


class _KeyHelper(Backend):
    touches_result = False

    def forward(self, items: list[Item]) -> None:
        for item in items:
            self.apply(item)
            if not self.touches_result and "result" not in item and "data" in item:
                item["result"] = item["data"]

    def apply(self, item: Item) -> None:
        raise NotImplementedError


class Add(_KeyHelper):
    """Sets constant keys: ``add = "color:rgb,scale:2"`` (values are strings)."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.pairs = _pairs(params, "add", options.node)
        self.touches_result = any(key == "result" for key, _ in self.pairs)

    def apply(self, item: Item) -> None:
        for key, value in self.pairs:
            item[key] = value


class Remove(_KeyHelper):
    """Removes keys if present: ``remove = "tmp,scratch"``."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.keys = get_list(params, "remove", node=options.node)
        if not self.keys:
            raise ConfigError("expected at least one key", node=options.node, key="remove")
        self.touches_result = "result" in self.keys

    def apply(self, item: Item) -> None:
        for key in self.keys:
            item.pop(key, None)


class Copy(_KeyHelper):
    """Copies values between keys: ``copy = "data:original"`` (missing sources are skipped)."""

    key = "copy"

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.pairs = _pairs(params, self.key, options.node)
        self.touches_result = any("result" in pair for pair in self.pairs)

    def apply(self, item: Item) -> None:
        for source, target in self.pairs:
            if source in item:
                item[target] = item[source]


class Move(Copy):
    """Renames keys: ``move = "result:boxes"`` (missing sources are skipped)."""

    key = "move"

    def apply(self, item: Item) -> None:
        for source, target in self.pairs:
            if source in item:
                item[target] = item.pop(source)


class _Raiser(Backend):
    error_type: type[Exception] = RuntimeError

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.error_on = set(get_list(params, "error_on", node=options.node))

    def forward(self, items: list[Item]) -> None:
        bad = [item["data"] for item in items if not self.error_on or str(item["data"]) in self.error_on]
        if bad:
            raise self.error_type(f"raised on purpose for data {bad[0]!r}")
        for item in items:
            item["result"] = item["data"]


class RaiseRuntimeError(_Raiser):
    """Raises RuntimeError (for all items, or those listed in ``error_on``)."""

    error_type = RuntimeError


class RaiseValueError(_Raiser):
    """Raises ValueError (for all items, or those listed in ``error_on``)."""

    error_type = ValueError


class _GraphOnly(Backend):
    """``Jump`` and ``MapReduce`` are carried out by the graph executor, never by an instance."""

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        raise ConfigError(
            f"{type(self).__name__} must be a node's whole backend (with 'jump'), not a stage inside another",
            node=options.node,
        )


class Jump(_GraphOnly):
    """``backend = "Jump"``, ``jump = "node"``: run the item through that node's subgraph."""


class MapReduce(_GraphOnly):
    """``backend = "MapReduce"``, ``jump``, ``split``, ``merge``: one sub-request per element."""
