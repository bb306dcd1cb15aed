"""What the tuner may turn: each node's knobs, their bounds, and the instance budget they share.

A :class:`Setting` gives every tuned node its :class:`Knobs` (active instances, batch ``max``,
batching window). A :class:`Space` says, per node, the :class:`Bounds` the user allows and how
many instances the computing nodes may run at once between them (the CPU budget: threads follow
from it, since each active instance's fair share is the budget's cores over the active
instances, NOTE [elastic budget]). Every setting the tuner proposes or applies is inside its
space (:meth:`Space.allows`); moves between settings are built here, the choice among them is the
model's (:mod:`pipeserve.tuning.model`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

__all__ = ["Bounds", "Knobs", "Move", "Setting", "Space", "WINDOW_STEPS_MS"]

WINDOW_STEPS_MS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""The batching windows the tuner tries, in milliseconds (within each node's bounds)."""


@dataclass(frozen=True, order=True)
class Knobs:
    """One node's tunable values: active ``instances``, batch ``max``, window in milliseconds."""

    instances: int
    max: int
    window_ms: float

    def __str__(self) -> str:
        return f"instances={self.instances} max={self.max} window={self.window_ms:g}ms"


Setting = Mapping[str, Knobs]
"""Knobs by node name."""


@dataclass(frozen=True)
class Bounds:
    """The values the tuner may give one node (inclusive ranges); ``frozen`` nodes keep theirs."""

    instances: tuple[int, int] = (1, 1)
    max: tuple[int, int] = (1, 1)
    window_ms: tuple[float, float] = (0.0, 0.0)
    frozen: bool = False

    def holds(self, knobs: Knobs) -> bool:
        """Whether ``knobs`` lie within these bounds."""
        return (
            self.instances[0] <= knobs.instances <= self.instances[1]
            and self.max[0] <= knobs.max <= self.max[1]
            and self.window_ms[0] <= knobs.window_ms <= self.window_ms[1]
        )

    def clamp(self, knobs: Knobs) -> Knobs:
        """``knobs`` moved to the nearest values within these bounds."""
        return Knobs(
            min(max(knobs.instances, self.instances[0]), self.instances[1]),
            min(max(knobs.max, self.max[0]), self.max[1]),
            min(max(knobs.window_ms, self.window_ms[0]), self.window_ms[1]),
        )

    def max_steps(self) -> tuple[int, ...]:
        """The batch sizes tried: powers of two within the bounds, and the bounds themselves."""
        low, high = self.max
        steps = {low, high}
        size = 1
        while size <= high:
            if size >= low:
                steps.add(size)
            size *= 2
        return tuple(sorted(steps))

    def window_steps(self) -> tuple[float, ...]:
        """The windows tried: :data:`WINDOW_STEPS_MS` within the bounds, and the bounds."""
        low, high = self.window_ms
        return tuple(sorted({low, high, *(w for w in WINDOW_STEPS_MS if low <= w <= high)}))


@dataclass(frozen=True)
class Move:
    """A change from one setting to a neighbour: the new setting and what changed, in words."""

    setting: Setting
    what: str
    nodes: tuple[str, ...]

    @property
    def key(self) -> tuple[tuple[str, Knobs], ...]:
        """The new setting as a hashable value."""
        return tuple(sorted(self.setting.items()))


@dataclass(frozen=True)
class Space:
    """Where the tuner searches.

    Attributes:
        bounds: each tuned node's bounds (nodes absent here are not tuned).
        instance_budget: the most instances the ``computing`` nodes may run at once together.
        computing: the nodes whose instances count against the budget (those that compute on
            the CPU; a node that waits on the network or a device does not).
    """

    bounds: Mapping[str, Bounds]
    instance_budget: int
    computing: frozenset[str]

    def used(self, setting: Setting) -> int:
        """Instances of the computing nodes that ``setting`` runs."""
        return sum(k.instances for name, k in setting.items() if name in self.computing)

    def allows(self, setting: Setting) -> bool:
        """Whether ``setting`` is within every bound and the instance budget."""
        return self.used(setting) <= self.instance_budget and all(
            self.bounds[name].holds(knobs) for name, knobs in setting.items() if name in self.bounds
        )

    def within(self, limits: Mapping[str, int]) -> Space:
        """This space with each node's ``max`` bound lowered to ``limits[node]`` (the largest
        batch its backend accepts, known once built)."""
        bounds = {
            name: replace(b, max=(min(b.max[0], limits[name]), min(b.max[1], limits[name]))) if name in limits else b
            for name, b in self.bounds.items()
        }
        return replace(self, bounds=MappingProxyType(bounds))

    def tuned(self) -> tuple[str, ...]:
        """The nodes the tuner may change."""
        return tuple(name for name, bounds in self.bounds.items() if not bounds.frozen)

    def moves(self, setting: Setting, *, every_step: bool = False) -> Iterator[Move]:
        """Every neighbour of ``setting`` within the space: one node's instances one more or one
        fewer (one more also as a move of an instance from another computing node, when the
        budget is spent), its batch ``max`` one step up or down, its window one step up or down
        (only where batches can hold more than one item: a batch of one never waits), or to
        its lowest. With ``every_step``, any ``max`` and window step rather than the next ones
        (the offline search lets the model judge a jump: a jump saves trials)."""
        for name in self.tuned():
            knobs, bounds = setting[name], self.bounds[name]
            yield from self._instance_moves(setting, name)
            sizes = bounds.max_steps()
            for size in sizes if every_step else _neighbours(sizes, knobs.max):
                if size != knobs.max:
                    yield self._move(setting, {name: replace(knobs, max=size)}, f"{name}: max {knobs.max} -> {size}")
            windows = bounds.window_steps()
            targets = set(windows if every_step else _neighbours(windows, knobs.window_ms)) if knobs.max > 1 else set()
            if knobs.window_ms > windows[0]:
                targets.add(windows[0])
            targets.discard(knobs.window_ms)
            for window in sorted(targets):
                yield self._move(
                    setting,
                    {name: replace(knobs, window_ms=window)},
                    f"{name}: window {knobs.window_ms:g} -> {window:g} ms",
                )

    def _instance_moves(self, setting: Setting, name: str) -> Iterator[Move]:
        knobs, bounds = setting[name], self.bounds[name]
        if knobs.instances > bounds.instances[0]:
            fewer = replace(knobs, instances=knobs.instances - 1)
            yield self._move(setting, {name: fewer}, f"{name}: instances {knobs.instances} -> {fewer.instances}")
        if knobs.instances >= bounds.instances[1]:
            return
        more = replace(knobs, instances=knobs.instances + 1)
        grown = {**setting, name: more}
        what = f"{name}: instances {knobs.instances} -> {more.instances}"
        if name not in self.computing or self.used(grown) <= self.instance_budget:
            yield self._move(setting, {name: more}, what)
            return
        for other in self.tuned():  # the budget is spent: take one from another computing node
            theirs = setting[other]
            if other != name and other in self.computing and theirs.instances > self.bounds[other].instances[0]:
                less = replace(theirs, instances=theirs.instances - 1)
                yield self._move(
                    setting, {name: more, other: less}, f"{what}, {other}: {theirs.instances} -> {less.instances}"
                )

    def _move(self, setting: Setting, changed: Mapping[str, Knobs], what: str) -> Move:
        return Move(MappingProxyType({**setting, **changed}), what, tuple(changed))

    def grid(self, max_points: int = 100_000) -> Iterator[Setting]:
        """Every setting of the space (instances, max steps, window steps per tuned node) within
        the instance budget; at most ``max_points`` of them. For exhaustive comparisons."""
        names = self.tuned()
        choices = []
        for name in names:
            bounds = self.bounds[name]
            choices.append(
                [
                    Knobs(i, m, w)
                    for i in range(bounds.instances[0], bounds.instances[1] + 1)
                    for m in bounds.max_steps()
                    for w in bounds.window_steps()
                ]
            )
        count = 0
        for combo in itertools.product(*choices):
            setting = dict(zip(names, combo, strict=True))
            if self.used(setting) <= self.instance_budget:
                yield MappingProxyType(setting)
                count += 1
                if count >= max_points:
                    return


Step = TypeVar("Step", int, float)


def _neighbours(steps: Sequence[Step], value: float) -> list[Step]:
    """The steps just below and just above ``value`` (which need not be a step itself)."""
    below = [s for s in steps if s < value]
    above = [s for s in steps if s > value]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])
