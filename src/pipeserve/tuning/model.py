"""What the tuner believes about a pipeline, fitted from its samples, and what it predicts.

NOTE [tuning model]
Each node's cost is a line: a batch of ``b`` items takes ``fixed + per_item * b`` seconds in
``forward``, fitted by least squares to the seconds per batch size the node measured
(``NodeStatistics.compute_by_size``), weighted by batches. Seen at one size only, the split is
unknown and assumed even (``FIXED_PRIOR``): enough to make a larger batch worth one trial, which
then measures it. Each node's *visits* are its items per completed request (several for a node
behind a map-reduce).

A setting's throughput and latency follow from a small queueing picture of each node: items
arrive at ``X * visits`` a second; an instance takes up to ``max`` of them, after at most the
window; at load a batch holds what arrived during the last one (``rate * cost(b) / instances``),
at low load one item plus what the window gathers, at load large enough to keep up (utilisation
``BUSY``); the node can do at most ``instances * max /
cost(max)`` items a second, and waits grow as ``rho / (2 (1 - rho))`` batch times near it. A
request's latency is the sum over its nodes (plus extra rounds for a node that gets more items of
one request than its instances take in one go). Under ``clients`` closed-loop callers the
throughput solves ``X * latency(X) = clients``; under an open ``rate``, ``X = rate`` while below
capacity. Predictions are scaled by what the setting measured actually gave against what the
model says it gives (:meth:`Model.predict` with ``measured``), so only the model's *ratios*
between settings matter. The model ranks candidates; measurements decide (the search measures each
one it picks, the controller reverts a change that measures worse).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .sample import Sample
from .space import Knobs, Setting

__all__ = ["BUSY", "Cost", "FIXED_PRIOR", "Load", "Model", "Prediction"]

BUSY = 0.9
"""The utilisation at which a loaded node's queue stops growing: batches grow until it is met."""

FIXED_PRIOR = 0.5
"""The share of a batch's time assumed fixed when a node was measured at one batch size only."""


@dataclass(frozen=True)
class Cost:
    """Seconds a batch of ``b`` items takes: ``fixed + per_item * b``."""

    fixed: float
    per_item: float

    def seconds(self, batch: float) -> float:
        return self.fixed + self.per_item * batch

    def rate(self, instances: int, batch: int) -> float:
        """Items a second that ``instances`` running full batches of ``batch`` can do."""
        return instances * batch / self.seconds(batch) if self.seconds(batch) > 0 else math.inf

    @classmethod
    def fit(cls, points: Mapping[int, tuple[float, float]]) -> Cost | None:
        """The line through ``{size: (batches, total seconds)}``, weighted by batches, with
        both terms kept >= 0; None without points."""
        points = {b: (w, s) for b, (w, s) in points.items() if w > 0 and b > 0}
        if not points:
            return None
        if len(points) == 1:
            ((size, (weight, total)),) = points.items()
            mean = total / weight
            return cls(FIXED_PRIOR * mean, (1 - FIXED_PRIOR) * mean / size)
        sw = sum(w for w, _ in points.values())
        sb = sum(w * b for b, (w, _) in points.items())
        st = sum(s for _, s in points.values())  # sum of w * mean = total seconds
        sbb = sum(w * b * b for b, (w, _) in points.items())
        sbt = sum(b * s for b, (_, s) in points.items())
        det = sw * sbb - sb * sb
        per_item = (sw * sbt - sb * st) / det if det > 0 else 0.0
        fixed = (st - per_item * sb) / sw
        if per_item < 0:
            return cls(st / sw, 0.0)
        if fixed < 0:
            return cls(0.0, sbt / sbb)
        return cls(fixed, per_item)


@dataclass(frozen=True)
class Load:
    """The load a prediction is for: ``clients`` closed-loop callers, or an open ``rate`` of
    requests a second."""

    clients: float = 0.0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if (self.clients > 0) == (self.rate > 0):
            raise ValueError("a load is either clients or a rate")

    @classmethod
    def seen(cls, sample: Sample) -> Load:
        """The load a running pipe was under, as closed-loop callers (Little's law)."""
        return cls(clients=max(1.0, sample.concurrency))


@dataclass(frozen=True)
class Prediction:
    """What a setting is expected to give: requests a second, latency mean and p99 (ms), and the
    node that limits it."""

    throughput: float
    mean_ms: float
    p99_ms: float
    bottleneck: str
    headroom: tuple[float, ...] = ()
    """The capacities (requests a second) of the other nodes, smallest first: between settings
    predicted alike, the one with more of it is a step towards a better one."""


class Model:
    """Each node's cost line and visits per request, fitted from samples (NOTE [tuning model]).

    Args:
        memory: how much of the past each new sample keeps (1: all of it, for trials of fixed
            settings; below 1 forgets older samples, for a pipe whose load or data drift).
    """

    def __init__(self, memory: float = 1.0) -> None:
        self.memory = memory
        self._points: dict[str, dict[int, list[float]]] = {}
        self._visits: dict[str, list[float]] = {}
        self._tail = (0.0, 0.0)  # summed p99 and mean latency, for the tail's ratio
        self._costs: dict[str, Cost | None] = {}  # fitted lines, until the next update

    def update(self, sample: Sample) -> None:
        """Fold a sample in (older ones fade by ``memory``)."""
        self._costs.clear()
        for name, node in sample.nodes.items():
            points = self._points.setdefault(name, {})
            for entry in points.values():
                entry[0] *= self.memory
                entry[1] *= self.memory
            for size, (batches, seconds) in node.sizes.items():
                entry = points.setdefault(size, [0.0, 0.0])
                entry[0] += batches
                entry[1] += seconds
            visits = self._visits.setdefault(name, [0.0, 0.0])
            visits[0] = visits[0] * self.memory + node.arrived
            visits[1] = visits[1] * self.memory + sample.completed
        if sample.completed:
            p99, mean = self._tail
            self._tail = (p99 * self.memory + sample.p99_ms, mean * self.memory + sample.mean_ms)

    def cost(self, node: str) -> Cost | None:
        """The node's fitted cost line (None before it ran a batch)."""
        if node not in self._costs:
            self._costs[node] = Cost.fit({size: (w, s) for size, (w, s) in self._points.get(node, {}).items()})
        return self._costs[node]

    def visits(self, node: str) -> float:
        """Items of one request that reach the node (1 before any sample)."""
        arrived, completed = self._visits.get(node, (0.0, 0.0))
        return arrived / completed if completed > 0 and arrived > 0 else 1.0

    def capacity(self, setting: Setting) -> tuple[float, str]:
        """The most requests a second the setting can do, and the node that bounds it."""
        return _lowest(self.capacities(setting))

    def capacities(self, setting: Setting) -> dict[str, float]:
        """Each measured node's capacity in requests a second under ``setting``."""
        limits = {}
        for name, knobs in setting.items():
            cost = self.cost(name)
            if cost is not None:
                limits[name] = cost.rate(knobs.instances, knobs.max) / self.visits(name)
        return limits

    def latency(
        self, setting: Setting, throughput: float, *, queueing: bool = True, clients: float = 0.0, bottleneck: str = ""
    ) -> float:
        """Mean seconds a request spends in the pipeline at ``throughput`` requests a second
        (without waits for a busy instance unless ``queueing``). With closed-loop ``clients``,
        the ``bottleneck``'s queue holds most of them, so its batches are as large as that
        allows."""
        total = 0.0
        for name, knobs in setting.items():
            cost = self.cost(name)
            if cost is not None:
                visits = self.visits(name)
                deep = clients * visits / knobs.instances if clients and name == bottleneck else 0.0
                total += _node_seconds(cost, knobs, throughput * visits, visits, queueing, deep)
        return total

    def _mean(self, setting: Setting, load: Load, throughput: float) -> float:
        """Mean latency: Little's law under closed-loop clients, the queueing picture under a rate."""
        if load.clients and throughput > 0:
            return load.clients / throughput
        return self.latency(setting, throughput)

    def predict(self, setting: Setting, load: Load, measured: tuple[Setting, Sample] | None = None) -> Prediction:
        """What ``setting`` should give under ``load``; with ``measured`` (a setting and what it
        gave), scaled by the model's error there."""
        limits = self.capacities(setting)
        capacity, bottleneck = _lowest(limits)
        headroom = tuple(sorted(limits.values())[1:])
        throughput = self._throughput(setting, load, capacity, bottleneck)
        mean = self._mean(setting, load, throughput)
        p99, mean_seen = self._tail
        tail = p99 / mean_seen if mean_seen > 0 else 2.0
        predicted = Prediction(throughput, 1e3 * mean, 1e3 * mean * tail, bottleneck, headroom)
        if measured is None:
            return predicted
        base_setting, sample = measured
        if base_setting == setting or sample.completed == 0:
            return Prediction(sample.throughput, sample.mean_ms, sample.p99_ms, bottleneck, headroom)
        base_throughput = self._throughput(base_setting, load, *self.capacity(base_setting))
        base_mean = self._mean(base_setting, load, base_throughput)
        speed = sample.throughput / base_throughput if base_throughput > 0 else 1.0
        slow = sample.mean_ms / (1e3 * base_mean) if base_mean > 0 else 1.0
        slow99 = sample.p99_ms / (1e3 * base_mean) if base_mean > 0 else tail
        return Prediction(
            throughput * speed, 1e3 * mean * slow, 1e3 * mean * slow99, bottleneck, tuple(h * speed for h in headroom)
        )

    def _throughput(self, setting: Setting, load: Load, capacity: float, bottleneck: str) -> float:
        if not math.isfinite(capacity):
            return load.rate or load.clients
        if load.rate:
            return min(load.rate, capacity)
        # Closed loop: the throughput bound of operational analysis, min(capacity, clients / the
        # latency without queueing), which holds at both ends (few clients, saturation).
        low, high = 0.0, capacity

        def bare(throughput: float) -> float:
            return self.latency(setting, throughput, queueing=False, clients=load.clients, bottleneck=bottleneck)

        if high * bare(high) <= load.clients:
            return high
        for _ in range(40):  # X * latency(X) grows with X: bisect for X * latency(X) = clients
            middle = (low + high) / 2
            if middle * bare(middle) < load.clients:
                low = middle
            else:
                high = middle
        return (low + high) / 2


def _lowest(limits: Mapping[str, float]) -> tuple[float, str]:
    """The smallest capacity and its node (infinite and no node without any)."""
    if not limits:
        return math.inf, ""
    where = min(limits, key=limits.__getitem__)
    return limits[where], where


def _node_seconds(cost: Cost, knobs: Knobs, rate: float, visits: float, queueing: bool, deep: float = 0.0) -> float:
    """Mean seconds one request spends at a node receiving ``rate`` items a second (``deep``:
    items queued per instance at a bottleneck, which an idle instance takes up to ``max``)."""
    window = knobs.window_ms / 1e3
    instances = knobs.instances
    # At load the queue grows until batches are large enough to keep up (utilisation BUSY);
    # at low load a batch is one item and what the window gathers.
    spare = instances * BUSY - rate * cost.per_item
    needed = rate * cost.fixed / spare if spare > 0 else math.inf
    batch = min(float(knobs.max), max(1.0, 1.0 + rate * window, needed, deep))
    service = cost.seconds(batch)
    rho = min(0.999, rate * service / (instances * batch))
    # A window is waited out only while instances are idle: at load batches form from the queue.
    wait = (1 - rho) * min(window, (knobs.max - 1.0) / rate) / 2 if rate > 0 and knobs.max > 1 else 0.0
    queued = rho / (2 * (1 - rho)) * service / instances if queueing else 0.0
    rounds = max(0.0, visits / (instances * batch) - 1.0) * service
    return wait + service + queued + rounds
