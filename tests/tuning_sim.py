"""A discrete-event simulation of a chain of batching nodes, for the tuner's tests.

Each node has a cost line (``fixed + per_item * batch`` seconds), active instances, a batch
``max`` and a window, and releases a batch as the pipe does (NOTE [batch release]): full, the
oldest item's window over, or (past the entry) nothing more coming from upstream. Time is
virtual and the run deterministic for a seed, so a test can drive the tuner through minutes of
load in a fraction of a second and compare it with an exhaustive search on the same model.
It produces the same :class:`~pipeserve.tuning.Sample` a real pipe gives.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType

from pipeserve.tuning import Knobs, NodeSample, Sample, Setting


@dataclass(frozen=True)
class Stage:
    name: str
    fixed_ms: float
    per_item_ms: float

    def seconds(self, batch: int) -> float:
        return (self.fixed_ms + self.per_item_ms * batch) / 1e3


@dataclass
class _Node:
    stage: Stage
    knobs: Knobs
    queue: deque[tuple[float, int]] = field(default_factory=deque)
    busy: int = 0
    timer: float | None = None
    arrived: int = 0
    items: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    queue_seconds: float = 0.0
    sizes: dict[int, list[float]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)


class Simulation:
    """A closed loop of ``clients`` callers (no think time) or an open ``rate`` of requests a
    second (Poisson, seeded) through ``stages`` in a chain, under ``setting``."""

    def __init__(
        self, stages: list[Stage], setting: Setting, *, clients: int = 0, rate: float = 0.0, seed: int = 0
    ) -> None:
        self.nodes = [_Node(stage, setting[stage.name]) for stage in stages]
        self.now = 0.0
        self.clients = clients
        self.rate = rate
        self.random = random.Random(seed)
        self._events: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self._started: dict[int, float] = {}
        self._next_id = 0
        self._latencies: list[float] = []
        self._mark = 0.0
        self._marks: list[tuple[int, int, int, float, float, dict[int, list[float]], dict[str, int]]] = []
        self._snapshot()
        if clients:
            for _ in range(clients):
                self._send()
        if rate:
            self._push(self.random.expovariate(rate), "arrive", None)

    # ------------------------------------------------------------------ control
    @property
    def setting(self) -> Setting:
        return MappingProxyType({n.stage.name: n.knobs for n in self.nodes})

    def apply(self, setting: Setting) -> None:
        """Change knobs now (running batches finish; fewer instances take effect as they end)."""
        for node in self.nodes:
            node.knobs = setting[node.stage.name]
        for index in range(len(self.nodes)):
            self._dispatch(index)

    def set_clients(self, clients: int) -> None:
        """A step in closed-loop load: more callers start now (fewer stop as they finish)."""
        for _ in range(max(0, clients - self.clients)):
            self._send()
        self.clients = clients

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self._events and self._events[0][0] <= end:
            at, _, kind, data = heapq.heappop(self._events)
            self.now = at
            if kind == "done":
                self._done(*data)  # type: ignore[misc]
            elif kind == "timer":
                index = data
                assert isinstance(index, int)
                if self.nodes[index].timer == at:
                    self.nodes[index].timer = None
                    self._dispatch(index)
            elif kind == "arrive":
                self._send()
                self._push(self.now + self.random.expovariate(self.rate), "arrive", None)
        self.now = end

    def sample(self) -> Sample:
        """What happened since the last sample (or the start)."""
        before = self._marks
        self._snapshot()
        after = self._marks
        seconds = self.now - self._mark
        self._mark = self.now
        nodes = {}
        for node, then, now in zip(self.nodes, before, after, strict=True):
            sizes = {}
            for size, (count, spent) in now[5].items():
                c0, s0 = then[5].get(size, [0, 0.0])
                if count - c0 > 0 and spent - s0 > 0:
                    sizes[size] = (int(count - c0), spent - s0)
            nodes[node.stage.name] = NodeSample(
                knobs=node.knobs,
                arrived=now[0] - then[0],
                items=now[1] - then[1],
                batches=now[2] - then[2],
                busy_seconds=now[3] - then[3],
                queue_seconds=now[4] - then[4],
                sizes=MappingProxyType(sizes),
                reasons=MappingProxyType(
                    {r: c - then[6].get(r, 0) for r, c in now[6].items() if c > then[6].get(r, 0)}
                ),
                queued=len(node.queue),
            )
        latencies, self._latencies = self._latencies, []
        return Sample.of(latencies, seconds, nodes)

    # ------------------------------------------------------------------ mechanics
    def _snapshot(self) -> None:
        self._marks = [
            (
                n.arrived,
                n.items,
                n.batches,
                n.busy_seconds,
                n.queue_seconds,
                {k: list(v) for k, v in n.sizes.items()},
                dict(n.reasons),
            )
            for n in self.nodes
        ]

    def _push(self, at: float, kind: str, data: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, data))

    def _send(self) -> None:
        request = self._next_id
        self._next_id += 1
        self._started[request] = self.now
        self._enqueue(0, [request])

    def _enqueue(self, index: int, requests: list[int]) -> None:
        node = self.nodes[index]
        for request in requests:
            node.queue.append((self.now, request))
        node.arrived += len(requests)
        self._dispatch(index)

    def _upstream(self, index: int) -> int:
        return sum(len(n.queue) + n.busy for n in self.nodes[:index])

    def _dispatch(self, index: int) -> None:
        node = self.nodes[index]
        while node.queue and node.busy < node.knobs.instances:
            oldest = node.queue[0][0]
            if len(node.queue) >= node.knobs.max:
                reason = "full"
            elif self.now >= oldest + node.knobs.window_ms / 1e3:
                reason = "timeout"
            elif index > 0 and self._upstream(index) == 0:
                reason = "nothing_coming"
            else:
                at = oldest + node.knobs.window_ms / 1e3
                if node.timer is None or node.timer > at:
                    node.timer = at
                    self._push(at, "timer", index)
                return
            batch = [node.queue.popleft() for _ in range(min(node.knobs.max, len(node.queue)))]
            node.busy += 1
            node.batches += 1
            node.items += len(batch)
            node.reasons[reason] = node.reasons.get(reason, 0) + 1
            node.queue_seconds += sum(self.now - t for t, _ in batch)
            cost = node.stage.seconds(len(batch))
            self._push(self.now + cost, "done", (index, [r for _, r in batch], cost))

    def _done(self, index: int, requests: list[int], cost: float) -> None:
        node = self.nodes[index]
        node.busy -= 1
        node.busy_seconds += cost
        entry = node.sizes.setdefault(len(requests), [0, 0.0])
        entry[0] += 1
        entry[1] += cost
        if index + 1 < len(self.nodes):
            self._enqueue(index + 1, requests)
        else:
            for request in requests:
                self._latencies.append(self.now - self._started.pop(request))
                if self.clients and self._next_id - len(self._started) >= 0 and len(self._started) < self.clients:
                    self._send()
        self._dispatch(index)
        # A node upstream finishing may leave the nodes below with nothing coming.
        for later in range(index + 1, len(self.nodes)):
            if self.nodes[later].queue:
                self._dispatch(later)
