"""The tuner (NOTE [tuning model], [tuning search], [autotune]): its model, its space, the offline
search and the online controller, driven by a simulated pipeline whose costs are known and whose
clock is virtual (tests/tuning_sim.py), compared with an exhaustive search of the same space; and
the controller on a real pipe."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

import pipeserve as ps
from pipeserve.tuning import Bounds, Cost, Knobs, Load, Sample, Search, Setting, Space, better
from pipeserve.tuning.controller import Controller
from tests.tuning_sim import Simulation, Stage

# Unequal stages: a cheap one that batches well, a heavy one whose cost is mostly fixed (batching
# pays), and one whose cost is mostly per item (batching does not pay: instances do).
STAGES = [Stage("a", 2.0, 0.5), Stage("b", 8.0, 1.0), Stage("c", 1.0, 2.0)]
TARGET_MS = 60.0
BAD_START = {s.name: Knobs(1, 1, 0.0) for s in STAGES}


def space(window_ms: tuple[float, float] = (0.0, 0.0), budget: int = 6) -> Space:
    bounds = Bounds(instances=(1, 4), max=(1, 16), window_ms=window_ms)
    return Space({s.name: bounds for s in STAGES}, budget, frozenset(s.name for s in STAGES))


def measure(setting: Setting, clients: int, seconds: float = 1.0) -> Sample:
    """One trial on the simulation (deterministic: a closed loop has no randomness)."""
    sim = Simulation(STAGES, setting, clients=clients)
    sim.run(0.3)
    sim.sample()
    sim.run(seconds)
    return sim.sample()


_EXHAUSTIVE: dict[int, tuple[Setting, Sample]] = {}


def exhaustive_best(clients: int) -> tuple[Setting, Sample]:
    """The best setting of the whole space (2,500 settings) for ``clients``, measured each."""
    if clients not in _EXHAUSTIVE:
        best: tuple[Setting, Sample] | None = None
        for setting in space().grid():
            sample = measure(setting, clients)
            if best is None or better(sample, best[1], TARGET_MS):
                best = (setting, sample)
        assert best is not None
        _EXHAUSTIVE[clients] = best
    return _EXHAUSTIVE[clients]


# ---------------------------------------------------------------------------- model and space
def test_a_cost_line_is_recovered_from_batches_of_several_sizes() -> None:
    points = {b: (10.0, 10 * (0.004 + 0.001 * b)) for b in (1, 2, 8)}
    cost = Cost.fit(points)
    assert cost is not None
    assert cost.fixed == pytest.approx(0.004) and cost.per_item == pytest.approx(0.001)
    assert cost.rate(2, 8) == pytest.approx(2 * 8 / 0.012)
    one = Cost.fit({4: (5.0, 5 * 0.010)})  # one size: the split is the prior's
    assert one is not None and one.seconds(4) == pytest.approx(0.010) and one.fixed > 0
    assert Cost.fit({}) is None
    flat = Cost.fit({1: (1.0, 0.005), 2: (1.0, 0.004)})  # cheaper when larger: never a negative slope
    assert flat is not None and flat.per_item == 0.0


def test_moves_stay_within_the_bounds_and_move_instances_once_the_budget_is_spent() -> None:
    tight = space(budget=4)
    setting = {"a": Knobs(1, 1, 0.0), "b": Knobs(2, 16, 0.0), "c": Knobs(1, 4, 0.0)}
    moves = list(tight.moves(setting))
    assert moves and all(tight.allows(m.setting) for m in moves)
    grown = [m for m in moves if m.setting["c"].instances == 2]
    assert grown and all(tight.used(m.setting) <= 4 for m in grown)
    assert {m.setting["b"].instances for m in grown} | {m.setting["a"].instances for m in grown} >= {1}
    assert not any(m.setting["b"].max > 16 for m in moves)
    assert sum(1 for _ in space().grid()) == 2500  # instances 1-4 (6 at most) x max 1, 2, 4, 8, 16 per node


# ---------------------------------------------------------------------------- offline search
def test_the_search_from_a_bad_start_gets_within_a_tenth_of_the_exhaustive_best() -> None:
    best_setting, best = exhaustive_best(32)
    search = Search(space(), BAD_START, TARGET_MS, Load(clients=32))
    while (proposal := search.next()) is not None:
        setting, _ = proposal
        assert search.space.allows(setting)
        search.record(setting, measure(setting, 32))
    found = search.best
    assert found is not None and found.meets(TARGET_MS)
    assert found.sample.throughput >= 0.9 * best.throughput, (dict(found.setting), dict(best_setting))
    assert len(search.trials) <= 20  # of 2,500: the model, not a grid, chose them
    assert search.stopped
    assert search.frontier()[-1].sample.throughput == max(t.sample.throughput for t in search.trials)


# ---------------------------------------------------------------------------- online controller
def drive(controller: Controller, sim: Simulation, ticks: int, allowed: Space) -> list[Sample]:
    samples = []
    for _ in range(ticks):
        sim.run(1.0)
        sample = sim.sample()
        samples.append(sample)
        new = controller.observe(sample)
        if new is not None:
            assert allowed.allows(new)  # never past the bounds or the instance budget
            sim.apply(new)
    return samples


@pytest.mark.parametrize("window_ms", [0.0, 50.0])
def test_online_from_a_bad_start_it_reaches_the_best_and_settles(window_ms: float) -> None:
    _, best = exhaustive_best(32)
    allowed = space(window_ms=(0.0, 50.0))
    start = {name: Knobs(1, 1, window_ms) for name in BAD_START}
    sim = Simulation(STAGES, start, clients=32)
    controller = Controller(allowed, start, TARGET_MS, clock=lambda: sim.now)
    samples = drive(controller, sim, 60, allowed)
    assert samples[0].throughput < 0.2 * best.throughput
    reached = next(i for i, s in enumerate(samples) if s.throughput >= 0.9 * best.throughput)
    assert reached < 40  # seconds of (virtual) load
    assert min(s.throughput for s in samples[reached + 5 :]) >= 0.9 * best.throughput
    assert all(s.p99_ms <= TARGET_MS for s in samples[reached + 5 :])
    assert controller.settled
    late = [d for d in controller.decisions if d.at > 45]
    assert not [d for d in late if d.kind != "keep"], late  # no oscillation once settled


def test_after_a_step_in_load_it_moves_to_the_new_best_and_settles() -> None:
    _, light = exhaustive_best(8)
    _, heavy = exhaustive_best(32)
    allowed = space()
    sim = Simulation(STAGES, BAD_START, clients=8)
    controller = Controller(allowed, BAD_START, TARGET_MS, clock=lambda: sim.now)
    first = drive(controller, sim, 40, allowed)
    assert min(s.throughput for s in first[-10:]) >= 0.9 * light.throughput
    assert controller.settled
    settled_before = dict(controller.setting)
    sim.set_clients(32)
    second = drive(controller, sim, 50, allowed)
    assert min(s.throughput for s in second[-10:]) >= 0.9 * heavy.throughput
    assert all(s.p99_ms <= TARGET_MS for s in second[-10:])
    assert controller.settled
    assert dict(controller.setting) != settled_before  # it moved to the new load's optimum
    assert not [d for d in controller.decisions if d.at > sim.now - 10 and d.kind != "keep"]


def test_frozen_it_changes_nothing_and_unfrozen_it_goes_on() -> None:
    allowed = space()
    sim = Simulation(STAGES, BAD_START, clients=32)
    controller = Controller(allowed, BAD_START, TARGET_MS, clock=lambda: sim.now)
    controller.frozen = True
    drive(controller, sim, 10, allowed)
    assert controller.decisions == [] and controller.setting == BAD_START
    controller.frozen = False
    drive(controller, sim, 3, allowed)
    assert controller.decisions and controller.setting != BAD_START
    controller.frozen = True
    frozen_at = dict(controller.setting)
    drive(controller, sim, 10, allowed)
    assert controller.setting == frozen_at  # a change on trial is kept, nothing after
    assert all(d.kind == "keep" for d in controller.decisions if d.at > sim.now - 10)


# ---------------------------------------------------------------------------- on a real pipe
def sleeping_pipeline(**autotune: Any) -> dict[str, Any]:
    bounds = {"instances": [1, 3], "max": [1, 16], "window_ms": [0, 20]}
    nodes: dict[str, Any] = {
        name: {"backend": "Sleep", "sleep_ms": fixed, "per_item_ms": per_item, "tune": bounds}
        for name, fixed, per_item in (("a", 1.0, 0.2), ("b", 4.0, 0.5), ("c", 0.5, 1.0))
    }
    nodes["a"]["next"] = "b"
    nodes["b"]["next"] = "c"
    return {"autotune": {"p99_ms": 200, "interval_s": 0.1, "instances": 5, **autotune}, **nodes}


def load(pipe: ps.Pipe, clients: int, requests: int) -> list[BaseException]:
    """``requests`` calls from ``clients`` threads; the errors raised."""
    errors: list[BaseException] = []
    per_client = requests // clients

    def client(index: int) -> None:
        for i in range(per_client):
            item = {"data": index * per_client + i}
            try:
                pipe(item, timeout=30)
                assert item["result"] == index * per_client + i
            except BaseException as exc:  # noqa: BLE001 - counted, and the test fails on any
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def knobs_now(pipe: ps.Pipe) -> dict[str, tuple[int, int, float]]:
    return {
        name: (node.active_instances, node.batch_range[1], node.batching_timeout_ms)
        for name, node in pipe.describe().nodes.items()
    }


def test_a_pipe_with_autotune_tunes_itself_under_load_without_failing_a_request() -> None:
    with ps.pipe(sleeping_pipeline(), budget=ps.CpuBudget(5)) as pipe:
        tuner = pipe.autotune
        assert tuner is not None
        assert knobs_now(pipe) == {name: (1, 1, 0.0) for name in "abc"}  # the configuration's values first
        assert all(node.instances == 3 and node.batch_limit == 16 for node in pipe.describe().nodes.values())
        errors = load(pipe, 16, 1600)
        assert errors == []  # every adjustment kept every request
        assert tuner.samples > 0 and tuner.decisions
        changed = [d for d in tuner.decisions if d.kind == "change"]
        assert changed and all(d.why and d.what for d in changed)
        now = knobs_now(pipe)
        assert now == {name: (k.instances, k.max, k.window_ms) for name, k in tuner.setting.items()}
        assert sum(active for active, _, _ in now.values()) <= 5
        assert all(1 <= active <= 3 and 1 <= size <= 16 and 0 <= w <= 20 for active, size, w in now.values())
        stats = pipe.stats()
        assert {"instances", "max", "window_ms", "decisions"} <= set(stats["b"]["autotune"])
        status = tuner.status()
        assert status["changes"] == len(changed) and status["instance_budget"] == 5
        tuner.freeze()
        frozen_setting = dict(tuner.setting)
        count = len(tuner.decisions)
        assert load(pipe, 16, 480) == []
        assert dict(tuner.setting) == frozen_setting and knobs_now(pipe) == now
        assert all(d.kind == "keep" for d in tuner.decisions[count:])
        assert tuner.status()["frozen"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"autotune": {"interval_s": 1}}, "needs p99_ms"),
        ({"autotune": {"p99_ms": 10, "bogus": 1}}, "unknown autotune key"),
        ({"autotune": {"p99_ms": 0}}, "above 0"),
        ({"autotune": {"p99_ms": 10, "instances": 2}}, "over autotune's instances = 2"),
        ({"a": {"tune": {"max": [4, 2]}}}, r"expected \[low, high\]"),
        ({"a": {"tune": {"speed": 1}}}, "unknown tune key"),
        ({"autotune": "fast"}, "expected a table"),
    ],
)
def test_bad_autotune_settings_are_config_errors(change: Mapping[str, Any], message: str) -> None:
    config = sleeping_pipeline()
    for key, value in change.items():
        if key == "autotune" and isinstance(value, dict):
            config["autotune"] = value
        elif isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    with pytest.raises(ps.ConfigError, match=message):
        ps.pipe(config, budget=ps.CpuBudget(5)).close()


# ---------------------------------------------------------------------------- pipeserve tune
def test_pipeserve_tune_writes_a_tuned_config_with_reasons_and_a_report(tmp_path: Any) -> None:
    import json

    import tomllib

    from pipeserve.cli import main

    source = tmp_path / "three.toml"
    source.write_text(
        "\n".join(
            f'[{name}]\nbackend = "Sleep"\nsleep_ms = {fixed}\nper_item_ms = {per_item}\n{nxt}'
            "tune = { instances = [1, 3], max = [1, 8], window_ms = [0, 0] }\n"
            for name, fixed, per_item, nxt in (
                ("a", 1.0, 0.2, 'next = "b"\n'),
                ("b", 4.0, 0.5, 'next = "c"\n'),
                ("c", 0.5, 1.0, ""),
            )
        )
    )
    out, report = tmp_path / "tuned.toml", tmp_path / "report.json"
    argv = [str(source), "--p99", "500", "--clients", "8", "--trial-s", "0.4", "--warmup-s", "0.1"]
    assert main(["tune", *argv, "--cpu-count", "4", "--budget-s", "5", "--out", str(out), "--report", str(report)]) == 0
    figures = json.loads(report.read_text())
    trials = figures["trials"]
    assert len(trials) >= 2 and trials[0]["why"] == "the start"
    best = trials[figures["best"]]
    assert best["throughput"] > trials[0]["throughput"] and best["meets_target"]
    assert all(t["failed"] == 0 for t in trials)
    text = out.read_text()
    tuned = tomllib.loads(text)
    assert set(tuned) == {"a", "b", "c"} and tuned["a"]["next"] == "b"
    for name, knobs in best["setting"].items():
        assert tuned[name].get("instance_num", 1) == knobs["instances"]
        assert tuned[name].get("max", 1) == knobs["max"]
    changed = [line for line in text.splitlines() if "# tuned: was" in line]
    assert changed and all("->" in line or line.endswith("was 1") for line in changed)
    assert sum(t["instances"] for t in best["setting"].values()) <= figures["space"]["instance_budget"]
    with ps.pipe(str(out)) as pipe:  # the tuned file is a configuration like any other
        assert pipe({"data": 3}) == {"data": 3, "result": 3}


def test_bucket_group_nodes_keep_their_configuration_under_autotune() -> None:
    config = sleeping_pipeline()
    config["b"] = {**config["b"], "max": "1&4", "bucket_key": "_size", "tune": {}}
    with ps.pipe(config, budget=ps.CpuBudget(5)) as pipe:
        assert pipe.autotune is not None and set(pipe.autotune.setting) == {"a", "c"}
        assert pipe({"data": 1, "_size": 1})["result"] == 1


def test_a_space_within_backend_limits_lowers_only_the_max_bounds() -> None:
    limited = space().within({"b": 4})
    assert limited.bounds["b"].max == (1, 4) and limited.bounds["a"].max == (1, 16)
    assert limited.bounds["b"].instances == (1, 4) and limited.instance_budget == 6


def test_when_p99_stays_over_the_target_after_a_kept_change_it_steps_back() -> None:
    import dataclasses

    allowed = space()
    sim = Simulation(STAGES, BAD_START, clients=32)
    controller = Controller(allowed, BAD_START, TARGET_MS, clock=lambda: sim.now)
    drive(controller, sim, 40, allowed)
    assert controller.settled
    settled = dict(controller.setting)
    last_kept = [d for d in controller.decisions if d.kind == "keep"][-1]
    for _ in range(3):  # the same setting now misses the target (a tail the judgement missed)
        sim.run(1.0)
        new = controller.observe(dataclasses.replace(sim.sample(), p99_ms=2 * TARGET_MS))
    assert new is not None and new != settled
    step = controller.decisions[-1]
    assert step.kind == "revert" and "over the target" in step.why and step.what == f"undo {last_kept.what}"
    changed = [d for d in controller.decisions if d.kind == "change" and d.what == last_kept.what][-1]
    assert dict(new) == dict(changed.before)  # back to where that change started
    stepped_at = len(controller.decisions)
    drive(controller, sim, 40, allowed)  # barred: it does not take that change again
    later = controller.decisions[stepped_at:]
    assert not any(d.kind == "change" and d.after == step.before for d in later)
