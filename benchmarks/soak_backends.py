"""Backends and the filter of the soak benchmark (``benchmarks/soak.py``), registered on import.

They live in a module of their own so that the process instances' workers import them too (the
worker imports the module that registered a backend in the parent). Every decision is a function
of the request's number ``n`` (the item's ``n`` key), so the outcome and the result each request
should get are known in advance (:func:`expected_total`):

- ``SoakSplit`` (the entry): fails requests with ``n % 10 == 7`` (ValueError, 10 % of the
  requests), otherwise splits ``n`` into the parts ``[n, n + 1]``, with a numpy array of
  ``BIG_LEN`` float64 (64 KiB: shared memory on the way to a process instance) as a third part for
  ``n % BIG_EVERY == 1``;
- ``SoakWork`` (a process instance, one sub-item per part): doubles an integer part, adds one to
  every element of an array; ends its own worker process with ``os._exit`` on every
  ``kill_every``-th batch of the worker (``kill_every`` key, 0: never);
- the ``SoakGate`` filter skips the gate node for ``n % 10 == 3`` and swaps otherwise;
- ``SoakSum`` (the gate) sums the parts' results; ``SoakPost`` (the sink) sums them where the
  gate was skipped and returns ``(total, gate_ran)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

import pipeserve as ps

BIG_LEN = 8192  # float64 elements: 64 KiB, the smallest array that travels through shared memory
BIG_EVERY = 50  # every 50th request carries a big array
FAIL_MOD = 7  # n % 10 == FAIL_MOD raises in SoakSplit
SKIP_MOD = 3  # n % 10 == SKIP_MOD skips the gate node
KILL_EXIT_CODE = 77

Item = dict[str, Any]


def parts_of(n: int) -> list[Any]:
    """The parts SoakSplit makes of request ``n``."""
    parts: list[Any] = [n, n + 1]
    if n % BIG_EVERY == 1:
        parts.append(np.full(BIG_LEN, float(n % 7)))
    return parts


def _value(part: Any) -> float:
    return float(part.sum()) if isinstance(part, np.ndarray) else float(part)


def expected_total(n: int) -> tuple[float, bool] | None:
    """The result request ``n`` should get, or None if it should fail in a backend."""
    if n % 10 == FAIL_MOD:
        return None
    total = 2.0 * n + 2.0 * (n + 1)
    if n % BIG_EVERY == 1:
        total += BIG_LEN * float(n % 7 + 1)
    return total, n % 10 != SKIP_MOD


@ps.register_backend("SoakSplit", replace=True)
class SoakSplit(ps.Backend):
    def forward(self, items: list[Item]) -> None:
        for item in items:
            n = item["data"]
            if n % 10 == FAIL_MOD:
                raise ValueError(f"soak: injected failure for request {n}")
            item["result"] = parts_of(n)


@ps.register_backend("SoakWork", replace=True)
class SoakWork(ps.Backend):
    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        self.kill_every = int(params.get("kill_every", 0))
        self.batches = 0

    def forward(self, items: list[Item]) -> None:
        self.batches += 1
        if self.kill_every and self.batches % self.kill_every == 0:
            os._exit(KILL_EXIT_CODE)  # the worker dies mid-batch, as if killed
        for item in items:
            part = item["data"]
            item["result"] = part + 1 if isinstance(part, np.ndarray) else 2 * part


@ps.register_filter("SoakGate", replace=True)
def soak_gate(item: Item) -> ps.Status:
    if item["n"] % 10 == SKIP_MOD:
        return ps.Status.Skip
    item["data"] = item.pop("result")
    return ps.Status.Run


@ps.register_backend("SoakSum", replace=True)
class SoakSum(ps.Backend):
    def forward(self, items: list[Item]) -> None:
        for item in items:
            item["result"] = sum(_value(part) for part in item["data"])


@ps.register_backend("SoakPost", replace=True)
class SoakPost(ps.Backend):
    def forward(self, items: list[Item]) -> None:
        for item in items:
            data = item["data"]
            if isinstance(data, list):  # the gate was skipped: its input (the parts' results) came on
                item["result"] = (sum(_value(part) for part in data), False)
            else:
                item["result"] = (float(data), True)
