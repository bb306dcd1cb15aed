"""The Backend contract, and the adapter that turns a plain function into one.

A backend processes a batch of items (dicts) in place::

    class Double(pipeserve.Backend):
        def forward(self, items):
            for item in items:
                item["result"] = item["data"] * 2

* ``init(params, options)`` is called once per instance, on the thread that will use it.
  ``params`` are the node's keys (plus ``Name::key`` scoped ones and inline ``Name(k=v)``);
  ``options`` says where the instance lives (see :class:`Options`).
* ``forward(items)`` reads ``data`` and writes ``result`` on each item. A backend may leave
  ``result`` unset for an item: the item then carries no result (the default ``swap`` filter of a
  following stage ends that request early).
* ``min()``/``max()`` give the batch sizes accepted; by default the node's ``min``/``max`` keys
  (both 1 when absent).
* ``close()`` releases resources; called once, on the owning thread.
* The CPU budget (NOTE [elastic budget] in :mod:`pipeserve.budget`): ``cpu_weight`` (class
  attribute; 0 for a backend that waits on I/O), ``max_threads()`` and ``use_threads(granted)``
  let a backend that can use several threads take the cores others leave idle.

A backend that can tell which items of a batch failed raises :class:`PartialFailure`; any other
exception fails the batch, which the node then re-runs item by item to isolate the culprits.
Instances are never shared between threads, so backends need not be thread-safe.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from .config import get_int
from .errors import ContractError, MissingDependencyError
from .filters import Filter

__all__ = ["Backend", "Child", "DuckBackend", "FunctionBackend", "Options", "PartialFailure", "require"]

Item = dict[str, Any]


@dataclass(frozen=True)
class Child:
    """A child stage handed to a composite backend (``A[B]``, ``S[A,B]``).

    Attributes:
        backend: the child, already initialised.
        name: its expression, e.g. ``"(swap)Resize"``, for error messages.
        filter: its filter, or None when it has none.
        filter_name: the filter's name, or None.
    """

    backend: Backend
    name: str
    filter: Filter | None = None
    filter_name: str | None = None


def no_deadline() -> float | None:
    """``Options.remaining`` where deadlines are not known (a process instance's worker)."""
    return None


def no_trace() -> str | None:
    """``Options.traceparent`` where traces are not known (a process instance's worker)."""
    return None


@dataclass(frozen=True)
class Options:
    """Where an instance lives.

    Attributes:
        node: the node's name.
        instance: the instance's index within the node (0-based, across all groups).
        group: the bucket group's index (0 without ``&``).
        instance_num: how many instances the node has in all.
        cpu_threads: the CPU threads this instance may count on when every instance is busy
            (its fair share of the CPU budget: the cores divided among all computing instances,
            at least 1; NOTE [elastic budget] in :mod:`pipeserve.budget`).
        cpu_cores: the cores of the CPU budget: the most threads an elastic backend's call may
            be granted (see :meth:`Backend.max_threads`).
        children: the child stages, for composite backends.
        remaining: during ``forward``, the seconds left before the earliest deadline among the
            batch's requests (negative once passed), or None when none has a deadline: what a
            backend that waits on something (a remote call) may wait at most.
        traceparent: during ``forward``, a W3C ``traceparent`` naming this batch's span in the
            trace of its first traced request, or None when none is traced: what a backend that
            calls another service sends along, so that the service's spans join the trace
            (NOTE [traces]).
    """

    node: str = "main"
    instance: int = 0
    group: int = 0
    instance_num: int = 1
    cpu_threads: int = 1
    cpu_cores: int = 1
    children: Sequence[Child] = field(default_factory=tuple)
    remaining: Callable[[], float | None] = field(default=no_deadline, compare=False, repr=False)
    traceparent: Callable[[], str | None] = field(default=no_trace, compare=False, repr=False)


class PartialFailure(Exception):
    """Raised by ``forward`` when only some items of the batch failed.

    Args:
        failures: the failing items' indices in the batch, with their exceptions.
    """

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        super().__init__(f"{len(failures)} item(s) failed")
        self.failures = dict(failures)


class Backend:
    """Base class of backends. Override ``forward``; the rest has sensible defaults."""

    params: Mapping[str, Any]
    options: Options
    #: The cores one batch keeps busy (NOTE [elastic budget] in :mod:`pipeserve.budget`): 1 for a
    #: backend that computes, 0 for one that waits on I/O (a remote call), which then takes no
    #: share of the CPU budget.
    cpu_weight: ClassVar[int] = 1

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        """Keep ``params`` and ``options``; subclasses extend this and call ``super().init``."""
        self.params = params
        self.options = options

    def forward(self, items: list[Item]) -> None:
        """Process ``items`` in place. The default passes ``data`` through as ``result``."""
        for item in items:
            item["result"] = item["data"]

    def min(self) -> int:
        """The smallest batch accepted: the ``min`` key, else 1."""
        return get_int(getattr(self, "params", {}), "min", 1, node=self._node(), minimum=1)

    def max(self) -> int:
        """The largest batch accepted: the ``max`` key, else 1."""
        return get_int(getattr(self, "params", {}), "max", 1, node=self._node(), minimum=1)

    def max_threads(self) -> int:
        """The most threads one ``forward`` call can use (NOTE [elastic budget]). Above 1 the
        backend is *elastic*: before each batch it is granted a thread count by the CPU budget
        and told through :meth:`use_threads`. The default, 1, suits Python code (the GIL)."""
        return 1

    def use_threads(self, granted: int) -> int:
        """Make the next ``forward`` use at most ``granted`` threads (1 <= granted <=
        :meth:`max_threads`); return how many it will use. Called on the instance's own thread,
        only for elastic backends. The default does nothing and uses one."""
        return 1

    def close(self) -> None:
        """Release resources. The default closes the child stages a composite was given (in
        reverse order); a backend that overrides it and has children closes them itself."""
        options = getattr(self, "options", None)
        for child in reversed(tuple(options.children if options is not None else ())):
            try:
                child.backend.close()
            except Exception:  # noqa: BLE001 - a failing close must not stop the others
                pass

    def _node(self) -> str | None:
        options = getattr(self, "options", None)
        return options.node if options is not None else None


class FunctionBackend(Backend):
    """Adapts a function over a list of items to the Backend contract.

    The function either writes ``result`` on the items itself and returns None, or returns a
    sequence with one result per item, which is stored as each item's ``result``.
    """

    def __init__(self, function: Callable[[list[Item]], Any]) -> None:
        self.function = function

    def forward(self, items: list[Item]) -> None:
        results = self.function(items)
        if results is None:
            return
        if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
            raise ContractError(
                f"function {self.function.__name__!r} must return None or a sequence of "
                f"{len(items)} results, got {type(results).__name__}"
            )
        if len(results) != len(items):
            raise ContractError(
                f"function {self.function.__name__!r}: expected {len(items)} results for a "
                f"batch of {len(items)}, got {len(results)}"
            )
        for item, result in zip(items, results, strict=True):
            item["result"] = result


class DuckBackend(Backend):
    """Adapts a user class that does not derive from :class:`Backend` but has ``forward``.

    Its optional ``init(params, options)``, ``min()``, ``max()`` and ``close()`` are used when
    present; the Backend defaults apply otherwise.
    """

    def __init__(self, target: Any) -> None:
        self.target = target

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        if callable(getattr(self.target, "init", None)):
            self.target.init(params, options)

    def forward(self, items: list[Item]) -> None:
        self.target.forward(items)

    def min(self) -> int:
        method = getattr(self.target, "min", None)
        return int(method()) if callable(method) else super().min()

    def max(self) -> int:
        method = getattr(self.target, "max", None)
        return int(method()) if callable(method) else super().max()

    def close(self) -> None:
        if callable(getattr(self.target, "close", None)):
            self.target.close()


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this backend needs {module!r}, which is not installed: pip install 'pipeserve[{extra}]'"
        ) from exc
