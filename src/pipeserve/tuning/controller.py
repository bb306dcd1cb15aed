"""The online controller: from each interval's sample of a serving pipe, whether to change a knob.

NOTE [autotune]
Every interval the controller folds the sample into its model (NOTE [tuning model], older
samples fading, so a drifting load or data is followed) and, unless frozen:

* if a change is on trial, it skips the sample that straddles the change, then judges the next
  one against the sample before the change: reverted when worse by more than ``margin`` (meeting
  the p99 target first, then throughput; missing it, lower p99), and that change barred (*tabu*)
  for ``tabu`` intervals; otherwise kept (a change that measures level may open the way to the
  next one), and the way back barred as long. A step
  in load (concurrency changed by half or more) makes the judgement void: the change is kept and
  the bars are lifted, since the best setting may have moved;
* quiet for ``EXPLORE`` intervals, it plans again only when the figures move (throughput by a tenth, p99 by a quarter
  or over the target) or after a rest that doubles up to ``REST`` intervals: a plan holds the
  GIL for tens of milliseconds, which shows in the p99 of a pipe serving hundreds of requests a
  second;
* frozen, it changes nothing (a change on trial is kept as it is);
* else it plans (NOTE [tuning search]: up to two moves within the space, the model's ranking) and
  makes the most promising change that is predicted to beat the present setting and is not
  barred; where the target is met, only one predicted to keep p99 under ``GUARD`` (0.9) of it,
  and a change is judged against the target less half that band, since an interval's p99 is
  noisy. When none is, it holds; ``settled`` says so after a few quiet intervals;
* after a kept change, when p99 goes over the target while the setting before it met the
  target, it proposes nothing; if p99 stays over for ``WATCH`` intervals it *steps back*: the
  change is undone and barred until the load changes (one interval's judgement can be lucky:
  large batches can pass it and then lengthen the tail), and so on back through the kept changes.

Hysteresis is the margin, the reverts and the bars: a change is made only on a predicted gain
of twice the margin, undone only on a measured loss of more than the margin, and neither a failed
change nor the way back from a kept one is tried again soon, so the controller never goes back and
forth between two settings. Changes go through ``Pipe.adjust``, which drops
and fails nothing (queued items batch under the new values). Each change and revert is a
:class:`Decision`: when, what, why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from .model import Load, Model
from .sample import Sample
from .search import better, plan, rank_key
from .space import Setting, Space

__all__ = ["KEPT", "Controller", "Decision"]

KEPT = 1000
"""Decisions a controller remembers (``counts`` counts them all)."""
GUARD = 0.9
"""Where the target is met, a change must be predicted to keep p99 under this share of it."""


@dataclass(frozen=True)
class Decision:
    """One change the controller made.

    Attributes:
        at: when (``time.time()``, or the controller's clock).
        kind: ``change`` (a trial), ``revert`` (a trial that measured worse) or ``keep``.
        what: the knobs that changed, in words.
        why: what the controller saw and expected.
        before, after: the settings.
    """

    at: float
    kind: str
    what: str
    why: str
    before: Setting
    after: Setting

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "kind": self.kind,
            "what": self.what,
            "why": self.why,
            "after": {name: str(knobs) for name, knobs in self.after.items()},
        }


@dataclass
class _Trial:
    before: Setting
    baseline: Sample
    what: str
    key: tuple[object, ...]
    nodes: tuple[str, ...]
    wait: int


WATCH = 3
"""Intervals of p99 over the target, after a kept change, that make the controller step back."""
FOREVER = 1 << 60
REST = 16
"""At most this many intervals between plans while settled and nothing moves."""
EXPLORE = 10
"""Intervals after a change during which the controller plans every interval (its model, still
learning from each sample, may find the next step a little later)."""


class Controller:
    """Decides changes from samples (NOTE [autotune]).

    Args:
        space: the bounds and instance budget.
        start: the setting the pipe runs now.
        target_ms: the p99 target.
        margin: the measured loss (a share) that undoes a change; a change is made only on a
            predicted gain of twice it.
        tabu: intervals a reverted change is barred for.
        min_requests: samples with fewer completed requests are too thin to judge by.
        memory: how much of its past the model keeps per sample.
        clock: what ``Decision.at`` reads.
    """

    def __init__(
        self,
        space: Space,
        start: Setting,
        target_ms: float,
        *,
        margin: float = 0.03,
        tabu: int = 30,
        min_requests: int = 20,
        memory: float = 0.8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.space = space
        self.setting: Setting = MappingProxyType(dict(start))
        self.target_ms = target_ms
        self.margin = margin
        self.tabu = tabu
        self.min_requests = min_requests
        self.model = Model(memory)
        self.clock = clock
        self.frozen = False
        self.decisions: list[Decision] = []  # the last KEPT of them
        self.counts: dict[tuple[str, str], int] = {}  # (node, kind) -> decisions that changed it
        self.totals: dict[str, int] = {}  # kind -> decisions
        self.quiet = 0  # intervals since the last change
        self._trial: _Trial | None = None
        self._barred: dict[tuple[object, ...], int] = {}
        self._tick = 0
        self._concurrency = 0.0
        self._kept: list[_Trial] = []  # kept changes whose baseline met the target, newest last
        self._rest = 1  # intervals to wait after a plan that found nothing, doubling up to REST
        self._resting_until = 0
        self._planned_on: Sample | None = None  # the sample of the last plan that found nothing
        self._recent: list[float] = []  # p99 of the intervals since the last change

    @property
    def settled(self) -> bool:
        """No change on trial and none made for the last 5 intervals."""
        return self._trial is None and self.quiet >= 5

    def observe(self, sample: Sample) -> Setting | None:
        """Fold in one interval's sample; the new setting to apply, or None to keep this one."""
        self._tick += 1
        if sample.completed < self.min_requests:
            return None
        self.model.update(sample)
        if self._concurrency and abs(sample.concurrency - self._concurrency) > 0.5 * self._concurrency:
            self._barred.clear()  # a step in load: the best setting may have moved
            self._kept.clear()
            if self._trial is not None:
                self._finish("keep", f"load changed (concurrency {self._concurrency:.3g} -> {sample.concurrency:.3g})")
        self._concurrency = sample.concurrency
        if self._trial is not None and self.frozen:
            self._finish("keep", "frozen while on trial")  # frozen: no change at all, reverts included
        if self._trial is not None:
            return self._judge(sample)
        if self.frozen:
            return None
        self._recent = [*self._recent[-(WATCH - 1) :], sample.p99_ms]
        if sample.p99_ms > self.target_ms and self._kept:
            # Over the target with a setting known to meet it behind us: go back there (after
            # WATCH intervals, in case this one is noise) rather than explore from here.
            return self._step_back()
        if self.quiet >= EXPLORE and self._tick < self._resting_until and not self._moved(sample):
            return None  # settled, and nothing has moved since: planning holds the GIL (~35 ms)
        return self._propose(sample)

    def _moved(self, sample: Sample) -> bool:
        """Whether the pipe's figures moved since the last plan that found nothing to do."""
        last = self._planned_on
        return (
            last is None
            or sample.p99_ms > self.target_ms
            or abs(sample.throughput - last.throughput) > 0.1 * last.throughput
            or abs(sample.p99_ms - last.p99_ms) > 0.25 * last.p99_ms
        )

    def _step_back(self) -> Setting | None:
        """A kept change whose setting then missed the target for ``WATCH`` intervals in a row,
        where the setting before it met the target, is undone and barred until the load changes:
        one interval's judgement can be lucky."""
        if len(self._recent) < WATCH or min(self._recent) <= self.target_ms or not self._kept:
            return None
        trial = self._kept.pop()
        self._barred[trial.key] = FOREVER
        p99s = ", ".join(f"{p:.3g}" for p in self._recent)
        why = f"p99 {p99s} ms over the target {self.target_ms:g} since; before it {trial.baseline.p99_ms:.3g} ms"
        self._record("revert", f"undo {trial.what}", why, trial.before, trial.nodes)
        return self.setting

    def _judge(self, sample: Sample) -> Setting | None:
        trial = self._trial
        assert trial is not None
        if trial.wait > 0:
            trial.wait -= 1
            return None
        base = trial.baseline
        # Kept unless measurably worse: a change that measures level may open the way to the
        # next one (the model predicted a gain); the way back is barred for a while instead.
        # Judged against the target less half the guard band, so that a change which pushes p99
        # close to the target is undone.
        kept = not better(base, sample, (1 + GUARD) / 2 * self.target_ms, self.margin)
        seen = (
            f"{sample.throughput:.3g}/s p99 {sample.p99_ms:.3g} ms, "
            f"before {base.throughput:.3g}/s p99 {base.p99_ms:.3g} ms"
        )
        if kept:
            self._barred[tuple(sorted(trial.before.items()))] = self._tick + self.tabu
            if base.p99_ms <= self.target_ms:
                self._kept = [*self._kept[-9:], trial]
            self._finish("keep", f"measured {seen}")
            return None
        self._barred[trial.key] = self._tick + self.tabu
        reverted = trial.before
        self._record("revert", f"undo {trial.what}", f"measured {seen}", reverted, trial.nodes)
        self._trial = None
        return reverted

    def _propose(self, sample: Sample) -> Setting | None:
        self.quiet += 1
        proposed = self._plan(sample)
        if proposed is None:  # nothing to do: plan again later, less often while nothing moves
            self._planned_on = sample
            self._resting_until = self._tick + self._rest
            self._rest = min(REST, 2 * self._rest)
        else:
            self._rest = 1
            self._resting_until = 0
        return proposed

    def _plan(self, sample: Sample) -> Setting | None:
        load = Load.seen(sample)
        base = (self.setting, sample)
        here = rank_key(self.model.predict(self.setting, load, base), self.target_ms)
        for move, prediction in plan(self.space, self.model, load, base, self.target_ms, depth=2, width=16):
            if self._barred.get(move.key, 0) > self._tick:
                continue
            if rank_key(prediction, self.target_ms) <= here:
                return None
            if not self._worth(prediction.throughput, prediction.p99_ms, sample):
                continue
            why = (
                f"measured {sample.throughput:.3g}/s p99 {sample.p99_ms:.3g} ms (target {self.target_ms:g}); "
                f"predicted {prediction.throughput:.3g}/s p99 {prediction.p99_ms:.3g} ms"
            )
            nodes = tuple(dict.fromkeys(move.nodes))
            self._trial = _Trial(self.setting, sample, move.what, move.key, nodes, wait=1)
            self._record("change", move.what, why, move.setting, nodes)
            return self.setting
        return None

    def _worth(self, throughput: float, p99_ms: float, sample: Sample) -> bool:
        """Whether a predicted gain clears the margin (hysteresis against changes for noise),
        and, where the target is met, keeps the predicted p99 a guard band below it (an
        interval's p99 is noisy; a setting that only just meets it misses it half the time)."""
        if sample.p99_ms > self.target_ms:
            return p99_ms <= sample.p99_ms * (1 - 2 * self.margin)
        return p99_ms <= GUARD * self.target_ms and throughput >= sample.throughput * (1 + 2 * self.margin)

    def _finish(self, kind: str, why: str) -> None:
        trial = self._trial
        assert trial is not None
        self._record(kind, trial.what, why, self.setting, trial.nodes)
        self._trial = None

    def _record(self, kind: str, what: str, why: str, after: Setting, nodes: tuple[str, ...]) -> None:
        before = self.setting
        self.setting = MappingProxyType(dict(after))
        if kind != "keep":
            self._recent = []
        if kind != "keep":
            self.quiet = 0
        for node in nodes:
            self.counts[(node, kind)] = self.counts.get((node, kind), 0) + 1
        self.totals[kind] = self.totals.get(kind, 0) + 1
        self.decisions.append(Decision(self.clock(), kind, what, why, before, self.setting))
        del self.decisions[:-KEPT]
