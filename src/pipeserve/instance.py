"""One instance of a node's backend: running a batch on it, isolating failures, naming errors.

An instance is built, used and closed by one owner at a time (its worker thread, or a caller
that borrowed it while idle, see NOTE [inline execution] in :mod:`pipeserve.dispatch`), so
backends need not be thread-safe.
"""

from __future__ import annotations

import enum
import threading
from typing import Any

from .backend import Backend, PartialFailure
from .batching import Task
from .budget import CpuSlot
from .config import NodeConfig, get_float, get_int, get_str
from .errors import ConfigError, RequestError, locate
from .registry import check_names
from .syntax import BackendTree, parse_backend

__all__ = ["Group", "Instance", "State", "plan_groups", "read_ranges"]

Item = dict[str, Any]


class State(enum.Enum):
    """Lifecycle of an instance, changed only under its node's lock."""

    STARTING = "starting"
    IDLE = "idle"  # in its group's idle list
    ASSIGNED = "assigned"  # a batch waits for its worker
    RUNNING = "running"  # its worker runs a batch
    BORROWED = "borrowed"  # a caller runs a batch on it inline
    ABANDONED = "abandoned"  # its batch ran past compute_timeout; its thread is left to finish
    CLOSED = "closed"


class Instance:
    """One backend instance and the state the node keeps about it.

    Attributes:
        index: the instance's index within the node.
        group: its bucket group's index.
        state: see :class:`State`.
        batch: the batch assigned to it (state ASSIGNED).
        current: the batch it is running, for close() to fail if it never returns.
        started: when its current batch started (clock reading), for health reports.
        cpu: its slot in the CPU budget, when it computes (NOTE [elastic budget]).
        batches, items: how many batches and items it ran.
    """

    def __init__(self, node: str, index: int, group: int, tree: BackendTree) -> None:
        self.node = node
        self.index = index
        self.group = group
        self.tree = tree
        self.label = str(tree)
        # A binary semaphore: held while there is nothing new for the worker; the node releases
        # it ("rings") under its lock only while it is held, so a ring is never lost nor doubled.
        self.doorbell = threading.Lock()
        self.doorbell.acquire()
        self.state = State.STARTING
        self.batch: list[Task] | None = None
        self.current: list[Task] | None = None
        self.backend: Backend | None = None
        self.cpu: CpuSlot | None = None
        self.thread: threading.Thread | None = None
        self.busy_seconds = 0.0  # folded into the node's statistics under its lock
        self.compute_seconds = 0.0  # all its batches' time in ``forward``
        self.sent_span: tuple[Task, int] | None = None  # a traceparent handed out for this batch
        self.reason = ""  # why its current batch was released (NOTE [batch release])
        self.started = 0.0
        self.returned = False  # its current batch is out of ``forward`` (NOTE [hung backends])
        self.batches = 0
        self.items = 0

    def ring(self) -> None:
        """Wake the worker (call with the node's lock held)."""
        if self.doorbell.locked():
            self.doorbell.release()

    def run(self, batch: list[Task], isolate: bool) -> dict[int, RequestError]:
        """Run ``batch`` on the backend; return the failures by batch index.

        NOTE [error isolation]
        A backend that raises :class:`~pipeserve.backend.PartialFailure` names its failing items
        itself. Any other exception on a batch of several items restores every item from a
        snapshot taken before the call and re-runs them one by one, so that only the items that
        fail on their own get an error. Without ``isolate`` the whole batch fails.
        """
        items = [task.item for task in batch]
        snapshots = [dict(item) for item in items] if isolate and len(items) > 1 else None
        assert self.backend is not None
        try:
            self.backend.forward(items)
        except PartialFailure as partial:
            return {i: self.wrap(e) for i, e in partial.failures.items() if 0 <= i < len(items)}
        except BaseException as exc:  # noqa: BLE001 - every failure must reach its requests
            if snapshots is None:
                return {i: self.wrap(exc) for i in range(len(items))}
            for item, snapshot in zip(items, snapshots, strict=True):
                item.clear()
                item.update(snapshot)
            failures: dict[int, RequestError] = {}
            for i, task in enumerate(batch):
                for error in self.run([task], isolate=False).values():
                    failures[i] = error
            return failures
        return {}

    def wrap(self, exc: BaseException) -> RequestError:
        """``exc`` as a RequestError naming this node, backend and instance."""
        return locate(exc, node=self.node, backend=self.label, instance=self.index)


class Group:
    """One bucket group of a node (``&``): its instances, batch range and window.

    Attributes:
        index: the group's position in the configuration.
        timeout: its batching window in seconds.
        min, max: its batch range, read from its backend once built (``max`` may be lowered
            later, :meth:`pipeserve.Pipe.adjust`).
        limit: the largest batch its backend accepts (``max`` never exceeds it).
        instances: its instances; idle: those waiting for work (the node's lock guards it).
        active: how many of its instances take batches (all unless lowered by
            :meth:`pipeserve.Pipe.adjust`); parked: idle instances kept out of work meanwhile.
    """

    def __init__(self, index: int, timeout: float) -> None:
        self.index = index
        self.timeout = timeout
        self.min = 1
        self.max = 1
        self.limit = 1
        self.instances: list[Instance] = []
        self.idle: list[Instance] = []
        self.active: int | None = None  # None: every instance
        self.parked: list[Instance] = []

    def over_active(self) -> bool:
        """Whether more instances than ``active`` are out of the parked list."""
        return self.active is not None and len(self.instances) - len(self.parked) > self.active

    def set_active(self, count: int) -> None:
        """Let ``count`` instances take batches (all from ``len(instances)`` up): park idle ones
        beyond it now (busy ones are parked as they become idle), or bring parked ones back."""
        self.active = None if count >= len(self.instances) else max(1, count)
        while self.over_active() and self.idle:
            self.park(self.idle.pop())
        while self.parked and (self.active is None or len(self.instances) - len(self.parked) < self.active):
            self.unpark(self.parked.pop())

    def park(self, instance: Instance) -> None:
        """Keep idle ``instance`` out of work; its CPU weight leaves the budget's fair share, so
        the active instances' share grows (NOTE [elastic budget])."""
        if instance.cpu is not None:
            instance.cpu.park(True)
        self.parked.append(instance)

    def unpark(self, instance: Instance) -> None:
        """Put ``instance``, taken from the parked list, back among the idle ones, its CPU weight
        back in the fair share."""
        if instance.cpu is not None:
            instance.cpu.park(False)
        self.idle.append(instance)


def plan_groups(config: NodeConfig) -> tuple[list[Group], list[Instance]]:
    """Parse each group's backend, check its names, and lay out ``instance_num`` instances per
    group (not built yet): the groups, and all instances in order.

    Raises:
        ConfigError: bad syntax, unknown names, bad numbers.
    """
    node = config.name
    layouts = []
    for index, params in enumerate(config.groups):
        tree = parse_backend(get_str(params, "backend", "Identity", node=node), node=node)
        check_names(tree, node)
        count = get_int(params, "instance_num", 1, node=node, minimum=1)
        timeout = get_float(params, "batching_timeout", 0.0, node=node, minimum=0.0) / 1e3
        layouts.append((index, tree, count, timeout))
    groups: list[Group] = []
    instances: list[Instance] = []
    for index, tree, count, timeout in layouts:
        group = Group(index, timeout)
        for _ in range(count):
            instance = Instance(node, len(instances), index, tree)
            group.instances.append(instance)
            instances.append(instance)
        groups.append(group)
    return groups, instances


def read_ranges(groups: list[Group], node: str) -> None:
    """Set each group's batch range from its built backends (``min()``/``max()``).

    Raises:
        ConfigError: an empty range, or no group that accepts a batch of one.
    """
    for group in groups:
        backend = group.instances[0].backend
        assert backend is not None
        group.min, group.max = backend.min(), backend.max()
        group.limit = group.max
        if group.min < 1 or group.min > group.max:
            raise ConfigError(f"batch range {group.min}..{group.max} is empty", node=node, key="max")
    if min(g.min for g in groups) != 1:
        raise ConfigError("the smallest 'min' of the bucket groups must be 1", node=node, key="min")
