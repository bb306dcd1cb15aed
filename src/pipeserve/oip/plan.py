"""What a declared signature means for every request, worked out once per signature.

NOTE [fast path]
A server decodes, splits, stacks and encodes every request against the same declared specs,
and for small tensors the bookkeeping (finding a spec by name, its numpy dtype, the shape and
element count it expects) costs more than the data. :func:`plan_of` works those facts out once
for a tuple of specs (a served model's signature never changes) and keeps them in a small
cache found by the tuple's identity; other sequences (a list may change) get a fresh plan.

The per-request functions then take a fast path for what clients usually send, and the
general code takes everything else: :func:`~pipeserve.oip.http_codec.decode_request` first
tries to decode a well-formed, valid body in one pass (:mod:`pipeserve.oip.http_fast`), which
gives up, without a word, at the first thing it does not expect; the general decoder (every
tensor, then :func:`~pipeserve.oip.validate.check_request`) then runs from the start. So a
fault is always reported by the general code, in its order and with its message, and the
fast path only accepts what the general one accepts, producing the same request. Likewise
:func:`~pipeserve.oip.batch.stack_outputs` takes numpy values that already have the declared
dtype and shape as they are and converts the rest as before, and the HTTP encoder writes the
JSON that ``json.dumps`` would. tests/test_oip.py checks both paths against each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import TensorSpec
from .datatypes import DATATYPES

__all__ = ["Plan", "SpecPlan", "plan_of"]

# Array kinds that coerce accepts from JSON numbers, by target dtype kind (see tensor.coerce).
_ALLOWED = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}

_CACHE_SIZE = 256  # signatures kept; a server holds one per loaded model


class SpecPlan:
    """The facts about one declared tensor that the per-request paths need.

    Attributes:
        index: the spec's position among the declared ones.
        spec: the spec itself.
        name, datatype, key, json: the spec's fields.
        shape: the declared per-item shape (``-1`` for a varying dimension).
        fixed: ``shape`` when it has no ``-1``, else ``None``.
        count: elements per item when ``fixed``, else ``None``.
        dtype: the numpy dtype of the datatype; ``None`` for BF16, which the fast paths leave
            to the general code (its dtype comes from an optional package).
        itemsize: bytes per element on the wire; ``None`` for BYTES.
        allowed: the array kinds that JSON values may have (``""`` for BYTES and BF16).
        floats: FP32 or FP64, which take JSON numbers (floats, exact ints) one by one.
        bounds: ``(min, max)`` of an integer datatype, else ``None``.
        element: a BYTES tensor with one element per item (split to the ``bytes`` themselves).
        one_element: a ``json`` tensor whose shape holds one element per item (only ones and ``-1``).
        ones: ``shape`` with every dimension 1 (the shape of one ``json`` document).
    """

    __slots__ = (
        "allowed",
        "bounds",
        "count",
        "datatype",
        "dtype",
        "element",
        "fixed",
        "floats",
        "index",
        "itemsize",
        "json",
        "key",
        "name",
        "one_element",
        "ones",
        "shape",
        "spec",
    )

    def __init__(self, spec: TensorSpec, index: int) -> None:
        self.index = index
        self.spec = spec
        self.name = spec.name
        self.datatype = spec.datatype
        self.key = spec.key
        self.json = spec.json
        self.shape = tuple(spec.shape)
        self.fixed: tuple[int, ...] | None = None if -1 in self.shape else self.shape
        self.count = None if self.fixed is None else math.prod(self.fixed)
        row = DATATYPES.get(spec.datatype)
        self.dtype: np.dtype[Any] | None = np.dtype(row.numpy) if row is not None and row.numpy else None
        self.itemsize = None if row is None else row.size
        kind = "" if self.dtype is None else self.dtype.kind
        self.allowed = _ALLOWED.get(kind, "")
        self.floats = spec.datatype in ("FP32", "FP64")
        self.bounds: tuple[int, int] | None = None
        if self.dtype is not None and kind in "iu":
            info = np.iinfo(self.dtype)
            self.bounds = (int(info.min), int(info.max))
        self.element = spec.datatype == "BYTES" and all(d == 1 for d in self.shape)
        self.one_element = all(d in (1, -1) for d in self.shape)
        self.ones = tuple(1 for _ in self.shape)


class Plan:
    """The facts about a sequence of declared tensors.

    Attributes:
        specs: one :class:`SpecPlan` per declared tensor, in declared order.
        by_name: each :class:`SpecPlan` by its name (the last one where names repeat).
        names: the declared names in order, as messages list them.
        unique: no two specs share a name.
    """

    __slots__ = ("by_name", "names", "specs", "unique")

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(SpecPlan(spec, index) for index, spec in enumerate(specs))
        self.by_name = {facts.name: facts for facts in self.specs}
        self.names = [facts.name for facts in self.specs]
        self.unique = len(self.by_name) == len(self.specs)


_PLANS: dict[int, tuple[Sequence[TensorSpec], Plan]] = {}


def plan_of(specs: Sequence[TensorSpec]) -> Plan:
    """The :class:`Plan` of ``specs``, computed once per tuple (see NOTE [fast path]).

    A tuple is found by identity, and the cache holds it, so its id cannot be reused while
    its plan is kept; :class:`~pipeserve.TensorSpec` is frozen, so the facts cannot go stale.
    """
    hit = _PLANS.get(id(specs))
    if hit is not None and hit[0] is specs:
        return hit[1]
    plan = Plan(specs)
    if type(specs) is tuple:
        if len(_PLANS) >= _CACHE_SIZE:
            _PLANS.clear()
        _PLANS[id(specs)] = (specs, plan)
    return plan
