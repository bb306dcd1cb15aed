"""How configurations become Ray Serve deployments (pipeserve.ray.plan: pure, no cluster), and
the pieces that cross between replicas: item changes, errors, merged figures."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest

import pipeserve as ps
from pipeserve.ray.plan import capacity, plan_app
from pipeserve.ray.transfer import apply, changes, outgoing


def _ocr_like() -> dict[str, Any]:
    return {
        "timeout": 5000,
        "prepare": {"backend": "Identity", "instance_num": 2, "next": "det", "inputs": [], "max_batch_size": 16},
        "det": {"backend": "Sleep", "instance_num": 2, "next": "post", "deployment": "det"},
        "post": {"backend": "Identity", "max": 32, "next": "rec"},
        "rec": {
            "backend": "Sleep",
            "instance_num": 3,
            "max": 4,
            "filter": "swap",
            "deployment": {"name": "rec", "replicas": 2, "num_gpus": 1},
        },
    }


def test_deployed_nodes_become_hops_that_keep_their_place_in_the_graph() -> None:
    plan = plan_app({"ocr": _ocr_like()}, cpus=2.0, fit_instances=False)
    ingress = plan.ingress.models["ocr"]
    det, rec = ingress["det"], ingress["rec"]
    assert det["backend"] == rec["backend"] == "RayHop"
    assert det["next"] == "post" and rec["filter"] == "swap"  # graph keys stay with the hop
    assert (det["ray_deployment"], det["ray_node"], det["ray_link"]) == ("det", "det", plan.link)
    assert "deployment" not in det and ingress["global"] == {"timeout": 5000}
    # Hop instances: one batch running and one on its way per instance of every replica.
    assert det["instance_num"] == 2 * 2 * 1 and rec["instance_num"] == 2 * 3 * 2
    parts = {part.name: part for part in plan.parts}
    assert set(parts) == {"det", "rec"}
    # A part runs the original node, without its graph keys, with the pipe-wide ones.
    assert parts["rec"].models["ocr"]["rec"] == {"backend": "Sleep", "instance_num": 3, "max": 4}
    assert parts["rec"].models["ocr"]["global"] == {"timeout": 5000}
    assert parts["rec"].replicas == 2 and parts["rec"].num_gpus == 1
    # Parts take every hop call of every ingress replica at once.
    assert parts["rec"].max_ongoing_requests >= rec["instance_num"]
    # Ingress requests: twice the largest batch capacity (the rec hop's: 4 x 12), at least 16.
    assert plan.ingress.max_ongoing_requests == 2 * 4 * 12


def test_cpus_are_shared_in_proportion_to_computing_instances() -> None:
    plan = plan_app({"ocr": _ocr_like()}, cpus=2.0, fit_instances=False)
    parts = {part.name: part for part in plan.parts}
    # Computing instances per replica: ingress 2 + 1 (hops compute nothing), det 2, rec 3 (x2 replicas).
    per_instance = 2.0 / (3 + 2 + 3 * 2)
    assert plan.ingress.num_cpus == pytest.approx(3 * per_instance, abs=0.01)
    assert parts["det"].num_cpus == pytest.approx(2 * per_instance, abs=0.01)
    assert parts["rec"].num_cpus == pytest.approx(3 * per_instance, abs=0.01)
    total = sum((d.num_cpus or 0) * d.replicas for d in plan.deployments)
    assert total <= 2.0
    # Fixed shares are taken first; every pipe's budget is its share in whole cores, at least 1.
    fixed = plan_app({"ocr": _ocr_like()}, cpus=4.0, num_cpus=2.0, fit_instances=False)
    assert fixed.ingress.num_cpus == 2.0 and fixed.ingress.cores == 2
    assert all(p.cores >= 1 for p in fixed.parts)
    assert sum((p.num_cpus or 0) * p.replicas for p in fixed.parts) <= 2.0


def test_replicas_without_gpus_run_at_most_one_instance_per_core() -> None:
    config = {**_ocr_like(), "post": {"backend": "Identity", "instance_num": 4, "next": "rec"}}
    one = plan_app({"ocr": config}, cpus=4.0, num_cpus=2.0)
    ingress = one.ingress.models["ocr"]
    assert ingress["prepare"]["instance_num"] == 2 and ingress["post"]["instance_num"] == 2
    assert one.ingress.fitted == ("ocr.post: 4 -> 2 instances",)
    parts = {part.name: part for part in one.parts}
    # rec: 3 instances on a GPU replica stay 3; det's 2 on its one-core share become 1, and its
    # hop is sized from what runs.
    assert parts["rec"].models["ocr"]["rec"]["instance_num"] == 3 and parts["rec"].fitted == ()
    assert parts["det"].cores == 1 and parts["det"].models["ocr"]["det"]["instance_num"] == 1
    assert ingress["det"]["instance_num"] == 2 * 1 * 1 and ingress["rec"]["instance_num"] == 2 * 3 * 2
    # Two one-core replicas of a two-instance node run what one two-core replica runs.
    two = plan_app({"m": {"backend": "Identity", "instance_num": 2}}, replicas=2, cpus=2.0)
    assert two.ingress.cores == 1 and two.ingress.models["m"]["main"]["instance_num"] == 1
    kept = plan_app({"m": {"backend": "Identity", "instance_num": 2}}, replicas=2, cpus=2.0, fit_instances=False)
    assert kept.ingress.models["m"]["main"]["instance_num"] == 2


def test_a_range_from_zero_is_planned_for_its_first_replica() -> None:
    config = {"a": {"backend": "Identity", "next": "b"}, "b": {"deployment": {"name": "p", "autoscale": [0, 2]}}}
    plan = plan_app({"m": config}, autoscale=(0, 4), cpus=8.0, fit_instances=False)
    assert sum(d.num_cpus or 0 for d in plan.deployments) <= 8.0
    assert plan.ingress.num_cpus == plan.parts[0].num_cpus == 4.0


def test_a_hop_keeps_the_imports_its_filter_may_need_and_never_a_compute_bound() -> None:
    config = {
        "a": {"backend": "Identity", "next": "b"},
        "b": {"imports": "my.filters", "filter": "Mine", "compute_timeout": 100, "deployment": "p"},
        "c": {"imports": "my.backends", "compute_timeout": 100, "deployment": "p"},
    }
    hops = plan_app({"m": config}).ingress.models["m"]
    assert hops["b"]["imports"] == "my.filters" and "imports" not in hops["c"]
    assert "compute_timeout" not in hops["b"] and "compute_timeout" not in hops["c"]


def test_autoscaling_ranges_and_batch_capacity() -> None:
    plan = plan_app({"m": {"backend": "Identity", "max": 8, "instance_num": 3}}, autoscale=(1, 4), num_cpus=3)
    assert plan.ingress.autoscale == (1, 4) and plan.ingress.replicas == 1 and plan.ingress.most_replicas == 4
    assert plan.ingress.max_ongoing_requests == 2 * 8 * 3
    assert plan_app({"m": {}}).ingress.num_cpus == 1.0  # no cluster figure: one CPU per replica
    assert capacity({"a": {"max": "4&8", "instance_num": "1&2"}, "b": {"max": 2}}) == 4 + 16
    assert plan_app({"m": {"backend": "Identity"}}, max_ongoing_requests=5).ingress.max_ongoing_requests == 5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"deployment": "x", "a": {"backend": "Identity"}}, "top-level"),
        ({"a": {"backend": "Jump", "jump": "b", "deployment": "x"}, "b": {}}, "nothing to deploy"),
        ({"a": {"max": "1&4", "deployment": "x"}}, "bucket groups"),
        ({"a": {"deployment": {"name": "x", "gpus": 1}}}, "unknown deployment option"),
        ({"a": {"deployment": 3}}, "deployment's name"),
        (
            {"a": {"deployment": {"name": "x", "replicas": 2}}, "b": {"deployment": {"name": "x", "replicas": 3}}},
            "replicas",
        ),
        ({"a": {"deployment": {"name": "x", "replicas": 1, "autoscale": [1, 2]}}}, "not both"),
        ({"a": {"deployment": "pipeserve"}}, "a name the application uses"),
        ({"a": {"deployment": "pipeserve-board"}}, "a name the application uses"),
        ({"backend": "Identity", "deployment": {"name": "x"}}, "top level"),
    ],
)
def test_misplaced_deployments_are_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ps.ConfigError, match=message):
        plan_app({"m": config})


def test_a_node_placement_is_ignored_in_process() -> None:
    with ps.pipe(_ocr_like()) as pipe:
        assert pipe({"data": 3}, timeout=5)["result"] == 3


def test_item_changes_travel_and_apply_in_place() -> None:
    item = {"data": 1, "keep": [1], "drop": 2, "event": object()}
    sent = outgoing(item)
    assert "event" not in sent and sent["keep"] is item["keep"]
    before = dict(sent)
    sent["result"] = 5
    sent["data"] = 7
    del sent["drop"]
    change = changes(before, sent)
    assert change == ({"result": 5, "data": 7}, ("drop",))
    apply(item, pickle.loads(pickle.dumps(change)))
    assert item["result"] == 5 and item["data"] == 7 and "drop" not in item and "event" in item


def test_errors_pickle_as_themselves_with_location_and_cause() -> None:
    backend = ps.BackendError(ValueError("bad"), node="rec", backend="Onnx", instance=1)
    again = pickle.loads(pickle.dumps(backend))
    assert type(again) is ps.BackendError and str(again) == str(backend)
    assert (again.node, again.backend, again.instance) == ("rec", "Onnx", 1)
    assert isinstance(again.__cause__, ValueError)
    late = pickle.loads(pickle.dumps(ps.RequestTimeout("late", node="det")))
    assert isinstance(late, TimeoutError) and late.node == "det"
    remote = pickle.loads(pickle.dumps(ps.RemoteError("gone", peer="det", node="det")))
    assert remote.peer == "det"

    class Unpicklable(Exception):
        def __init__(self) -> None:
            super().__init__("held a lock")
            self.lock = __import__("threading").Lock()

    wrapped = pickle.loads(pickle.dumps(ps.BackendError(Unpicklable(), node="n")))
    assert isinstance(wrapped.__cause__, RuntimeError) and "held a lock" in str(wrapped.__cause__)


def test_merged_figures_label_each_replica_and_sum_triton_counters() -> None:
    pytest.importorskip("prometheus_client")
    import prometheus_client

    from pipeserve import oip
    from pipeserve.metrics import register, unregister
    from pipeserve.ray.board import Board, ReplicaSnapshot, merged_exposition, sum_counters

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    with ps.pipe({"backend": "Identity"}) as pipe:
        watched = register(pipe, model="m", registry=registry)
        try:
            pipe({"data": 1})
            families = list(registry.collect())
        finally:
            unregister(watched)
    board = Board(stale_after=60)
    one = oip.ModelCounters("m", success=oip.Duration(2, 10), inference_count=3, last_inference_ms=5)
    two = oip.ModelCounters("m", success=oip.Duration(1, 4), inference_count=1, last_inference_ms=9)
    now = time.time()
    board.put(ReplicaSnapshot("r1", "ingress", now, families, (one,)))
    board.put(ReplicaSnapshot("r2", "ingress", now, families, (two,)))
    board.put(ReplicaSnapshot("r1", "ingress", now - 1, (), ()))  # older, arriving late: ignored
    text = merged_exposition(board.snapshots())[0].decode()
    assert 'nv_inference_count{deployment="ingress",model="m",replica="r1",version="1"} 1.0' in text
    assert 'replica="r2"' in text and text.count("# TYPE nv_inference_count counter") == 1
    total = sum_counters("m", [one, two])
    assert (total.success, total.inference_count, total.last_inference_ms) == (oip.Duration(3, 14), 4, 9)
    board.put(ReplicaSnapshot("r3", "ingress", now - 120, (), ()))
    assert [snapshot.replica for snapshot in board.snapshots()] == ["r1", "r2"]  # r3 stopped reporting


def test_lost_calls_are_retried_with_backoff_within_the_deadline_or_a_count() -> None:
    from pipeserve.ray.hop import Retries

    counted = Retries(None, most=3)
    pauses = []
    for _ in range(5):
        counted.attempts += 1
        pauses.append(counted.pause())
    assert pauses == [0.02, 0.04, None, None, None]  # three attempts in all without a deadline
    timed = Retries(time.monotonic() + 0.5, most=1)
    timed.attempts = 10  # a deadline, not a count, decides: pauses while one fits in what is left
    assert [timed.pause() for _ in range(6)] == [0.02, 0.04, 0.08, 0.16, 0.32, None]
    assert Retries(time.monotonic() - 1.0, most=10).pause() is None
