"""``pipeserve tune``: the offline search (NOTE [tuning search]) run on a real pipe under load.

The pipe is built once, each node with the high bounds of its instances and batch ``max`` (as
under ``autotune``); each trial puts a setting on it with ``Pipe.adjust``, warms up, and measures
``trial_s`` seconds of closed-loop clients (or an open rate) made by the bench load generator.
What a trial measured (throughput, latency quantiles, each node's batches and compute time per
batch size) feeds the search's model, which picks the next trial. The result: a tuned TOML with
a comment on each changed key, a JSON report of every trial, and a plot of the throughput/p99
frontier.

Bounds, per node, from its ``tune`` table (see :mod:`pipeserve.tuning.autotune`) or by default:
instances 1 to the larger of ``instance_num`` and the CPU budget's cores (for a node that
computes; otherwise ``instance_num``), ``max`` from the node's ``min`` to its configured ``max``
(a larger batch only where the table allows it: not every model takes batches of mixed inputs),
windows 0 to the configured window or 10 ms. The instance budget: ``autotune.instances`` if the
configuration has it, else the larger of the instances it declares and the cores.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import CpuBudget, Pipe
from ..tuning import Load, Sample, Search, Setting, Trial, better
from ..tuning.autotune import apply
from ..tuning.offline import CONFIG_KEYS, OfflinePlan, plan_offline, toml_text, toml_value
from .loadgen import LoadResult, run_closed_loop, run_open_loop

__all__ = ["TuneOptions", "TuneResult", "tune", "tuned_toml", "write_plot", "write_report"]

Item = dict[str, Any]


@dataclass(frozen=True)
class TuneOptions:
    """How to tune: the p99 target, the load (``clients`` or an open ``rate``), the time allowed
    (``budget_s`` for the whole search, ``trial_s`` measured per trial after ``warmup_s``) and the
    cores (``cpu_count``; default this machine's)."""

    p99_ms: float
    clients: int = 16
    rate: float = 0.0
    budget_s: float = 300.0
    trial_s: float = 5.0
    warmup_s: float = 1.0
    cpu_count: int | None = None
    patience: int = 3

    @property
    def load(self) -> Load:
        return Load(rate=self.rate) if self.rate else Load(clients=self.clients)

    def describe_load(self) -> str:
        return f"an open rate of {self.rate:g} requests/s" if self.rate else f"{self.clients} closed-loop clients"


@dataclass
class TuneResult:
    """What a search found: its trials (``search.trials``, the first is the configuration as
    given), the best, why it stopped, and how long it took."""

    search: Search
    plan: OfflinePlan
    options: TuneOptions
    elapsed_s: float

    @property
    def best(self) -> Trial:
        best = self.search.best
        assert best is not None
        return best

    @property
    def start(self) -> Trial:
        return self.search.trials[0]


def tune(
    source: str | os.PathLike[str] | Mapping[str, Any],
    make_item: Callable[[int], Item],
    options: TuneOptions,
    *,
    progress: TextIO | None = sys.stderr,
) -> TuneResult:
    """Search for the best setting of ``source`` for ``options`` (see the module docstring);
    trials run until the search stops or ``budget_s`` would be exceeded."""
    began = time.perf_counter()
    budget = CpuBudget(options.cpu_count)
    plan = plan_offline(source, budget.cores)
    with Pipe(plan.build, budget=budget) as pipe:
        # A backend may take smaller batches than asked (a model with a fixed batch size).
        limits = {name: node.batch_limit for name, node in pipe.describe().nodes.items()}
        space = plan.space.within(limits)
        start = {name: space.bounds[name].clamp(knobs) for name, knobs in plan.start.items()}
        search = Search(space, start, options.p99_ms, options.load, patience=options.patience)
        result = TuneResult(search, plan, options, 0.0)
        while (proposal := search.next()) is not None:
            spent = time.perf_counter() - began
            if spent + options.warmup_s + options.trial_s > options.budget_s:
                search.stopped = f"the time budget ({options.budget_s:g} s) is spent"
                break
            setting, _ = proposal
            trial = search.record(setting, _trial(pipe, setting, make_item, options))
            if progress is not None:
                print(_line(trial, options.p99_ms), file=progress)
    result.elapsed_s = time.perf_counter() - began
    return result


def _trial(pipe: Pipe, setting: Setting, make_item: Callable[[int], Item], options: TuneOptions) -> Sample:
    """Put ``setting`` on the pipe, warm up, measure."""
    apply(pipe, setting)

    def run(seconds: float) -> LoadResult:
        if options.rate:
            return run_open_loop(pipe.submit, make_item, rate=options.rate, seconds=seconds)
        return run_closed_loop(pipe, make_item, clients=options.clients, seconds=seconds, warmup=0.0)

    if options.warmup_s > 0:
        run(options.warmup_s)
    before = pipe.statistics()
    loaded = run(options.trial_s)
    after = pipe.statistics()
    return Sample.between(before, after, setting, loaded.latencies, loaded.seconds, loaded.errors)


def _line(trial: Trial, target_ms: float) -> str:
    s = trial.sample
    mark = "meets" if trial.meets(target_ms) else "misses"
    figures = f"{s.throughput:8.3g}/s  p50 {s.p50_ms:8.4g} ms  p99 {s.p99_ms:8.4g} ms ({mark})"
    return f"trial {trial.index:>2}: {figures}  {trial.why}"


# ---------------------------------------------------------------------------- the tuned TOML
def tuned_toml(result: TuneResult, source_name: str) -> str:
    """The configuration with the best setting, each changed key commented with why."""
    best, start, options = result.best, result.start, result.options
    b, s = best.sample, start.sample
    header = [
        f"Tuned by `pipeserve tune {source_name} --p99 {options.p99_ms:g}` on {datetime.date.today()}, under"
        f" {options.describe_load()}:",
        f"{b.throughput:.3g} requests/s, p50 {b.p50_ms:.4g} ms, p99 {b.p99_ms:.4g} ms"
        f" (as configured: {s.throughput:.3g}/s, p99 {s.p99_ms:.4g} ms); target p99 {options.p99_ms:g} ms"
        f" {'met' if best.meets(options.p99_ms) else 'NOT met'}.",
        f"{len(result.search.trials)} trials in {result.elapsed_s:.0f} s; the search stopped: {result.search.stopped}.",
    ]
    return toml_text(result.plan.config, best.setting, start.setting, lambda node, key: _why(result, node, key), header)


def _why(result: TuneResult, node: str, key: str) -> str:
    """A comment on a changed key: its old value and the trial that first set the final one."""
    knob = CONFIG_KEYS[key]
    final = getattr(result.best.setting[node], knob)
    was = getattr(result.start.setting[node], knob)
    previous = result.start
    for trial in result.search.trials[1 : result.best.index + 1]:
        if getattr(trial.setting[node], knob) == final and getattr(previous.setting[node], knob) != final:
            move = trial.why.split(": predicted")[0]
            busy = result.start.sample.nodes.get(node)
            load = f"; busy {100 * busy.utilisation(result.start.sample.seconds):.0f}% as configured" if busy else ""
            return (
                f"was {toml_value(was)}; trial {trial.index} ({move}):"
                f" {previous.sample.throughput:.3g} -> {trial.sample.throughput:.3g}/s,"
                f" p99 {previous.sample.p99_ms:.4g} -> {trial.sample.p99_ms:.4g} ms{load}"
            )
        previous = trial if _better_or_same(trial, previous, result.options.p99_ms) else previous
    return f"was {toml_value(was)}"


def _better_or_same(trial: Trial, previous: Trial, target: float) -> bool:
    return not better(previous.sample, trial.sample, target)


# ---------------------------------------------------------------------------- report and plot
def report(result: TuneResult, source_name: str) -> dict[str, Any]:
    """Every trial, the best, the frontier, the space and the run, as plain data."""
    import platform

    frontier = {t.index for t in result.search.frontier()}
    return {
        "meta": {
            "config": source_name,
            "p99_ms": result.options.p99_ms,
            "load": result.options.describe_load(),
            "trial_s": result.options.trial_s,
            "warmup_s": result.options.warmup_s,
            "budget_s": result.options.budget_s,
            "elapsed_s": round(result.elapsed_s, 2),
            "stopped": result.search.stopped,
            "machine": {"python": platform.python_version(), "cores": os.cpu_count(), "platform": platform.platform()},
        },
        "space": {
            "instance_budget": result.search.space.instance_budget,
            "bounds": {
                n: {"instances": list(b.instances), "max": list(b.max), "window_ms": list(b.window_ms)}
                for n, b in result.search.space.bounds.items()
            },
        },
        "best": result.best.index,
        "trials": [
            {
                "index": t.index,
                "why": t.why,
                "setting": {n: asdict(k) for n, k in t.setting.items()},
                "throughput": t.sample.throughput,
                "p50_ms": t.sample.p50_ms,
                "p99_ms": t.sample.p99_ms,
                "completed": t.sample.completed,
                "failed": t.sample.failed,
                "meets_target": t.meets(result.options.p99_ms),
                "on_frontier": t.index in frontier,
                "predicted": None
                if t.expected is None
                else {"throughput": t.expected.throughput, "p99_ms": t.expected.p99_ms},
            }
            for t in result.search.trials
        ],
    }


def write_report(result: TuneResult, source_name: str, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(json.dumps(report(result, source_name), indent=2) + "\n")


def write_plot(result: TuneResult, path: str | os.PathLike[str]) -> None:
    """Throughput against p99 of every trial, the frontier, the target and the best (matplotlib).

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in result.search.trials if t.sample.completed]
    frontier = result.search.frontier()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.scatter(
        [t.sample.p99_ms for t in trials], [t.sample.throughput for t in trials], s=18, color="0.55", label="trials"
    )
    for t in trials:
        axes.annotate(
            str(t.index), (t.sample.p99_ms, t.sample.throughput), fontsize=7, xytext=(3, 2), textcoords="offset points"
        )
    axes.plot(
        [t.sample.p99_ms for t in frontier],
        [t.sample.throughput for t in frontier],
        "-o",
        color="tab:blue",
        ms=4,
        label="frontier",
    )
    axes.axvline(
        result.options.p99_ms, color="tab:red", ls="--", lw=1, label=f"p99 target {result.options.p99_ms:g} ms"
    )
    best, start = result.best.sample, result.start.sample
    axes.scatter(
        [start.p99_ms], [start.throughput], marker="s", s=60, color="tab:orange", label="as configured", zorder=3
    )
    axes.scatter([best.p99_ms], [best.throughput], marker="*", s=160, color="tab:green", label="best", zorder=3)
    axes.set_xlabel("p99 latency (ms)")
    axes.set_ylabel("throughput (requests/s)")
    axes.set_title(
        f"pipeserve tune: {len(trials)} trials, {result.elapsed_s:.0f} s ({result.options.describe_load()})",
        fontsize=10,
    )
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
