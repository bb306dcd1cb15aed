"""Backends for the process-instance tests, registered on import (the workers import this too)."""

import os
from typing import Any

import pipeserve as ps


def count_primes(limit: int) -> int:
    """Pure-Python CPU work that holds the GIL."""
    count = 0
    for n in range(2, limit):
        for d in range(2, int(n**0.5) + 1):
            if n % d == 0:
                break
        else:
            count += 1
    return count


@ps.register_backend("PrimesForProcessTest", replace=True)
class Primes(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if item["data"] == "crash":
                os._exit(3)
            if item["data"] == "fail":
                raise KeyError("asked to fail")
            item["result"] = count_primes(int(item["data"]))
            item["pid"] = os.getpid()
            item.pop("scratch", None)


@ps.register_backend("ArraysForProcessTest", replace=True)
class Arrays(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["result"] = item["data"] * 2
            item["small"] = item["data"][:2].copy()


@ps.register_backend("PartialForProcessTest", replace=True)
class Partial(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["result"] = item["data"]
        raise ps.PartialFailure(
            {i: ValueError(f"odd {item['data']}") for i, item in enumerate(items) if item["data"] % 2}
        )
