"""The offline search: which setting to try next, from what the trials so far measured.

NOTE [tuning search]
A local search that the model steers (NOTE [tuning model]), not a grid. It measures the start,
then repeats: fit the model to every trial so far; from the best trial's setting, list the
neighbours within the space (an instance more or fewer, moved between nodes when the budget is
spent; any batch ``max`` step; any window step); predict each, scaled by the best trial's
measured figures; measure the most promising one not yet measured. When none is predicted to
beat the best, it still measures the nearest call (predicted within ``near`` of it) while
``patience`` lasts; it stops after ``patience`` trials in a row that did not improve on the
best, when nothing near is left, or when the caller's time is up. "Better" puts a setting that meets the p99 target
first, then more throughput; among settings that miss it, the lower p99. Each trial is a
:class:`Trial`; the frontier is the trials no other beats in both throughput and p99.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Load, Model, Prediction
from .sample import Sample
from .space import Move, Setting, Space

__all__ = ["Search", "Trial", "better", "frontier", "plan", "rank_key", "score"]


@dataclass(frozen=True)
class Trial:
    """One measured setting: what it gave, why it was tried, and what the model expected."""

    index: int
    setting: Setting
    sample: Sample
    why: str
    expected: Prediction | None = None

    def meets(self, target_ms: float) -> bool:
        return self.sample.completed > 0 and self.sample.p99_ms <= target_ms


def score(throughput: float, p99_ms: float, target_ms: float) -> tuple[int, float]:
    """Larger is better: meeting the target first, then throughput (or, missing it, lower p99)."""
    if throughput > 0 and p99_ms <= target_ms:
        return (1, throughput)
    return (0, -p99_ms if throughput > 0 else float("-inf"))


def _beats(a: tuple[int, float], b: tuple[int, float], margin: float) -> bool:
    """Whether score ``a`` beats score ``b`` by more than ``margin`` (a share)."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] > b[1] + margin * abs(b[1])


def better(a: Sample, b: Sample, target_ms: float, margin: float = 0.0) -> bool:
    """Whether ``a`` beats ``b`` for the target, by more than ``margin`` (a share)."""
    return _beats(score(a.throughput, a.p99_ms, target_ms), score(b.throughput, b.p99_ms, target_ms), margin)


def rank_key(prediction: Prediction, target_ms: float) -> tuple[int, float, tuple[float, ...], float]:
    """Sort key of a prediction, larger is better: :func:`score` (throughput to 0.5 %), then the
    headroom of the next bottleneck (so a step across a plateau, where two nodes limit alike,
    counts), then lower p99."""
    feasible, value = score(prediction.throughput, prediction.p99_ms, target_ms)
    coarse = math.copysign(round(math.log(abs(value)) * 200), value) if 0 < abs(value) < math.inf else value
    headroom = tuple(round(math.log(h) * 200) if h > 0 else 0.0 for h in prediction.headroom)
    return (feasible, coarse, headroom, -prediction.p99_ms)


def plan(
    space: Space,
    model: Model,
    load: Load,
    base: tuple[Setting, Sample],
    target_ms: float,
    *,
    depth: int = 3,
    width: int = 8,
    every_step: bool = False,
) -> list[tuple[Move, Prediction]]:
    """Settings up to ``depth`` moves from ``base`` in the model's eyes, most promising first
    (a beam of ``width``): a chain of moves finds a better setting behind a plateau that no
    single move climbs (adding instances at one of two equal bottlenecks gains nothing alone).
    ``every_step``: see :meth:`Space.moves`."""
    start = Move(base[0], "", ())
    seen = {start.key}
    found: list[tuple[Move, Prediction]] = []
    beam = [start]
    for level in range(depth):
        expanded = []
        for path in beam:
            for step in space.moves(path.setting, every_step=every_step):
                move = Move(step.setting, "; ".join(filter(None, (path.what, step.what))), path.nodes + step.nodes)
                if move.key in seen or not space.allows(move.setting):
                    continue
                seen.add(move.key)
                expanded.append((move, model.predict(move.setting, load, base)))
        expanded.sort(key=lambda mp: rank_key(mp[1], target_ms), reverse=True)
        found.extend(expanded)
        # The best, and at first every move of an instance: taking one from a node costs
        # throughput until that node's batch grows, one move later.
        beam = [m for i, (m, _) in enumerate(expanded) if i < width or (level == 0 and _moves_instances(base[0], m))]
    found.sort(key=lambda mp: (rank_key(mp[1], target_ms), -len(mp[0].nodes)), reverse=True)
    return found


def _moves_instances(before: Setting, move: Move) -> bool:
    return any(before[name].instances != move.setting[name].instances for name in move.nodes if name in before)


def frontier(trials: Sequence[Trial]) -> list[Trial]:
    """The trials that no other beats in both throughput and p99, by throughput."""
    kept = []
    for trial in trials:
        s = trial.sample
        if s.completed and not any(
            o.sample.throughput >= s.throughput
            and o.sample.p99_ms <= s.p99_ms
            and o.sample != s
            and (o.sample.throughput > s.throughput or o.sample.p99_ms < s.p99_ms)
            for o in trials
            if o.sample.completed
        ):
            kept.append(trial)
    return sorted(kept, key=lambda t: t.sample.throughput)


class Search:
    """The model-guided search (NOTE [tuning search]). Call :meth:`next` for the setting to
    measure, :meth:`record` with what it gave, until :meth:`next` returns None.

    Args:
        space: where to search.
        start: the first setting measured.
        target_ms: the p99 target.
        load: the load the trials run under.
        near: once no neighbour is predicted to gain, one predicted within this share of the
            best is still tried (while ``patience`` lasts).
        patience: trials in a row without a new best before the search stops.
    """

    def __init__(
        self, space: Space, start: Setting, target_ms: float, load: Load, *, near: float = 0.05, patience: int = 3
    ) -> None:
        self.space = space
        self.target_ms = target_ms
        self.load = load
        self.near = near
        self.patience = patience
        self.model = Model()
        self.trials: list[Trial] = []
        self.stopped = ""
        self._next: tuple[Setting, str, Prediction | None] | None = (dict(start), "the start", None)
        self._misses = 0

    @property
    def best(self) -> Trial | None:
        """The best trial so far."""
        best = None
        for trial in self.trials:
            if best is None or better(trial.sample, best.sample, self.target_ms):
                best = trial
        return best

    def next(self) -> tuple[Setting, str] | None:
        """The next setting to measure and why, or None when the search is over (``stopped``
        says why)."""
        if self._next is None:
            return None
        return self._next[0], self._next[1]

    def record(self, setting: Setting, sample: Sample) -> Trial:
        """What ``setting`` (the one :meth:`next` gave) measured; chooses the next one."""
        expected = self._next[2] if self._next is not None else None
        why = self._next[1] if self._next is not None else "given"
        previous = self.best
        trial = Trial(len(self.trials), dict(setting), sample, why, expected)
        self.trials.append(trial)
        self.model.update(sample)
        self._misses = 0 if previous is None or better(sample, previous.sample, self.target_ms) else self._misses + 1
        self._next = self._choose()
        return trial

    def _choose(self) -> tuple[Setting, str, Prediction | None] | None:
        if self._misses >= self.patience:
            self.stopped = f"{self._misses} trials in a row found nothing better"
            return None
        best = self.best
        assert best is not None
        seen = {tuple(sorted(t.setting.items())) for t in self.trials}
        ranked = plan(self.space, self.model, self.load, (best.setting, best.sample), self.target_ms, every_step=True)
        here = rank_key(self.model.predict(best.setting, self.load, (best.setting, best.sample)), self.target_ms)
        for move, prediction in ranked:
            if move.key in seen:
                continue
            why = f"{move.what}: predicted {prediction.throughput:.3g}/s, p99 {prediction.p99_ms:.3g} ms"
            if rank_key(prediction, self.target_ms) > here:
                return move.setting, why, prediction
            # Nothing is predicted to gain: while patience lasts, check the closest call (the
            # model is a sketch; a near miss in it may be a gain in fact).
            if rank_key(prediction, self.target_ms) != here and better_prediction(
                prediction, best.sample, self.target_ms, -self.near
            ):
                return move.setting, f"{why} (a near call)", prediction
            break
        self.stopped = "no setting near the best is predicted to beat it"
        return None

    def frontier(self) -> list[Trial]:
        """The trials on the throughput/p99 frontier."""
        return frontier(self.trials)


def better_prediction(prediction: Prediction, sample: Sample, target_ms: float, margin: float) -> bool:
    """Whether a prediction beats a measured sample by ``margin``."""
    predicted = score(prediction.throughput, prediction.p99_ms, target_ms)
    return _beats(predicted, score(sample.throughput, sample.p99_ms, target_ms), margin)
