"""The CPU budget: how many threads each compute instance of a pipe may use.

The machine's cores are one budget for the whole pipe, since its stages run at the same time:
each instance of every node gets ``cores // instances`` threads (at least one), which a backend
uses for its intra-op threads unless told otherwise (SPEC 3: never oversubscribe by default).
This is the one place that divides the budget; the elastic budget will grow here.
"""

from __future__ import annotations

import os

__all__ = ["machine_cores", "share"]


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def share(cores: int, instances: int) -> int:
    """Threads per instance when ``instances`` share ``cores``: at least one."""
    return max(1, cores // max(1, instances))
