"""The CPU budget: how many threads each compute instance may use, now.

NOTE [elastic budget]
The cores are one budget for the whole process, since every pipe in it (a server's models too)
runs at the same time. Each instance of a backend that computes joins the budget with a
:class:`CpuSlot` when it is built and leaves when it closes; a slot says how many cores the
instance keeps busy right now (``busy``: 0 between batches).

* The *fair share* is ``cores // the weight of all slots`` (at least one): what every instance may
  count on when all are busy. A backend sizes itself for it at build time (``Options.cpu_threads``).
* An *elastic* backend (one whose :meth:`~pipeserve.Backend.max_threads` exceeds 1: ONNX Runtime,
  PyTorch) asks for a grant before each batch: its fair share, or more when the other slots leave
  cores idle (``cores - the others' busy``), at most its ``max_threads()``. A request that is alone
  in the process so runs its detector on every core; under load each call falls back to its share.
  A call is not widened while more items of its node are queued: a sibling instance is about to
  start on them and would find its cores taken.
  The backend applies the grant through :meth:`~pipeserve.Backend.use_threads` and says how many
  threads it will really use, which the slot records until the batch ends.
* Other backends (Python stages, process instances) only record their weight while a batch runs:
  a GIL-bound stage keeps one core busy. A backend that waits on I/O (``Remote``) declares
  ``cpu_weight = 0`` and takes no part.

Grants are decided under the budget's lock from the other slots' ``busy``, which those slots
write without it (a plain attribute store): a stage that starts while a widened call runs sees the
grant already counted and gets its share, so the budget is exceeded only for the rest of that one
widened call, never by two widened calls at once. Measured on this project's machines
(docs/scheduling.md): one ONNX Runtime session per thread count and instance beats one shared
global thread pool by 30-35 % under load and matches it alone.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

__all__ = ["BudgetStatistics", "CpuBudget", "CpuSlot", "machine_cores", "process_budget", "share"]


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def share(cores: int, instances: int) -> int:
    """Threads per instance when ``instances`` share ``cores``: at least one."""
    return max(1, cores // max(1, instances))


class CpuSlot:
    """One instance's place in a :class:`CpuBudget` (NOTE [elastic budget]).

    Attributes:
        weight: the cores one of its batches keeps busy when not elastic (1; 0 never joins).
        most: the most threads one of its calls can use (above 1: elastic, its calls ask for a
            grant).
        busy: the cores its current batch keeps busy (0 between batches); written by its owner.
        parked: its instance is parked (:meth:`pipeserve.Pipe.adjust`): its weight leaves the
            fair share until it takes batches again.
    """

    __slots__ = ("budget", "busy", "most", "parked", "weight")

    def __init__(self, budget: CpuBudget, weight: int, most: int) -> None:
        self.budget = budget
        self.weight = weight
        self.most = most
        self.busy = 0
        self.parked = False

    def leave(self) -> None:
        """Leave the budget (idempotent)."""
        self.budget.leave(self)

    def park(self, parked: bool) -> None:
        """Take the slot's weight out of the fair share while its instance is parked, or put it
        back (idempotent)."""
        self.budget.park(self, parked)


@dataclass(frozen=True)
class BudgetStatistics:
    """A snapshot of a :class:`CpuBudget`.

    Attributes:
        cores: the cores it divides.
        slots: the instances that joined it; weight: their summed weight.
        fair_share: threads each may count on when all are busy.
        busy: cores the running batches keep busy now.
        grants: grants given to elastic calls; widened: those above the fair share.
    """

    cores: int
    slots: int
    weight: int
    fair_share: int
    busy: int
    grants: int
    widened: int


class CpuBudget:
    """The cores one process (or one replica, or one test) divides among its compute instances.

    Thread-safe. :func:`process_budget` is the one every pipe uses unless given another.
    """

    def __init__(self, cores: int | None = None) -> None:
        if cores is not None and cores < 1:
            raise ValueError(f"a CPU budget needs at least one core, got {cores}")
        self.cores = cores or machine_cores()
        self._lock = threading.Lock()
        self._slots: tuple[CpuSlot, ...] = ()  # replaced whole, so readers need no lock
        self._weight = 0
        self._grants = 0
        self._widened = 0

    def __repr__(self) -> str:
        return f"CpuBudget(cores={self.cores}, slots={len(self._slots)})"

    def fair_share(self, extra_weight: int = 0) -> int:
        """Threads per unit of weight when every slot (and ``extra_weight`` more) is busy."""
        return share(self.cores, self._weight + extra_weight)

    def join(self, weight: int = 1, most: int = 1) -> CpuSlot:
        """A new slot of ``weight`` (>= 1) whose calls can use up to ``most`` threads."""
        slot = CpuSlot(self, max(1, weight), max(1, most))
        with self._lock:
            self._slots = (*self._slots, slot)
            self._weight += slot.weight
        return slot

    def leave(self, slot: CpuSlot) -> None:
        """Remove ``slot`` (idempotent)."""
        with self._lock:
            if slot in self._slots:
                self._slots = tuple(s for s in self._slots if s is not slot)
                self._weight -= 0 if slot.parked else slot.weight
            slot.busy = 0

    def park(self, slot: CpuSlot, parked: bool) -> None:
        """``slot``'s instance is parked (its weight leaves the fair share) or back at work."""
        with self._lock:
            if slot.parked != parked and slot in self._slots:
                self._weight += -slot.weight if parked else slot.weight
            slot.parked = parked

    def grant(self, slot: CpuSlot, *, widen: bool = True) -> int:
        """Threads ``slot``'s next call may use: its fair share, or the cores the other slots
        leave idle when more (unless ``widen`` is false: more work of its node is queued for
        its siblings), at most ``slot.most``. Recorded as ``slot.busy`` until the caller sets
        what it really uses (and 0 when the call ends)."""
        with self._lock:
            others = 0
            for other in self._slots:
                if other is not slot:
                    others += other.busy
            fair = share(self.cores, self._weight)
            threads = min(slot.most, max(fair, self.cores - others) if widen else fair)
            slot.busy = threads
            self._grants += 1
            if threads > fair:
                self._widened += 1
        return threads

    def statistics(self) -> BudgetStatistics:
        """A consistent snapshot."""
        with self._lock:
            slots = self._slots
            return BudgetStatistics(
                cores=self.cores,
                slots=len(slots),
                weight=self._weight,
                fair_share=share(self.cores, self._weight),
                busy=sum(s.busy for s in slots),
                grants=self._grants,
                widened=self._widened,
            )


_process_budget: CpuBudget | None = None
_process_lock = threading.Lock()


def process_budget() -> CpuBudget:
    """The budget of this process's cores that every pipe shares unless given its own."""
    global _process_budget
    with _process_lock:
        if _process_budget is None:
            _process_budget = CpuBudget()
        return _process_budget
