"""Metrics (pipeserve.metrics, GET /metrics) and traces over the wire: counts equal what was sent."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
np = pytest.importorskip("numpy")
th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("uvicorn")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import pipeserve as ps  # noqa: E402
import pipeserve.metrics  # noqa: E402
from pipeserve.server import Server  # noqa: E402

FP32 = 'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
FP32_OUT = 'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'
CALLER = ps.TraceParent(0x5B8AA5A2D2C872E8321CF37308D69DF2, 0x051581BF3CB55C13, True)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, by name (as written: the parser names a counter's
    samples ``<family>_total`` even where Triton writes none) and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.startswith("nv_") and name.endswith("_total"):
                name = name[: -len("_total")]
            found[(name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


# ----------------------------------------------------------------- in process
def test_register_exports_an_in_process_pipes_metrics() -> None:
    registry = prometheus_client.CollectorRegistry()
    config = {"a": {"backend": "Identity", "next": "b", "max": 4}, "b": {"backend": "RuntimeError", "error_on": "7"}}
    with ps.pipe(config) as pipe:
        pipeserve.metrics.register(pipe, model="embedded", registry=registry)
        futures = [pipe.submit({"data": i}) for i in range(20)]
        outcomes = [f.exception(10) for f in futures]
        found = samples(prometheus_client.generate_latest(registry).decode())
        stats = pipe.stats()
    failed = sum(error is not None for error in outcomes)
    assert failed == 1
    model = {"model": "embedded", "version": "1"}
    assert value(found, "nv_inference_request_success", **model) == 19
    assert value(found, "nv_inference_request_failure", **model, reason="BACKEND") == 1
    assert value(found, "nv_inference_request_failure", **model, reason="REJECTED") == 0
    assert value(found, "nv_inference_count", **model) == 19
    assert value(found, "nv_inference_exec_count", **model) == stats["a"]["batches"]
    assert value(found, "nv_inference_pending_request_count", **model) == 0
    assert value(found, "pipeserve_request_duration_seconds_count", model="embedded") == 20
    assert value(found, "pipeserve_request_failures_total", model="embedded", error="BackendError") == 1
    for node in ("a", "b"):
        at = {"model": "embedded", "node": node}
        assert value(found, "pipeserve_node_items_total", **at) == 20
        assert value(found, "pipeserve_node_batches_total", **at) == stats[node]["batches"]
        assert value(found, "pipeserve_node_batch_size_count", **at) == stats[node]["batches"]
        assert value(found, "pipeserve_node_batch_size_sum", **at) == 20
        reasons = stats[node]["release_reasons"]
        for reason, count in reasons.items():
            assert value(found, "pipeserve_node_batch_releases_total", **at, reason=reason) == count
    assert value(found, "pipeserve_node_errors_total", model="embedded", node="b") == 1
    busy = value(found, "pipeserve_instance_busy_seconds_total", model="embedded", node="a", instance_index="0")
    assert busy > 0


def test_unregister_removes_the_families_and_the_observer() -> None:
    registry = prometheus_client.CollectorRegistry()
    with ps.pipe({"backend": "Identity"}) as pipe:
        watched = pipeserve.metrics.register(pipe, model="gone", registry=registry)
        pipe({"data": 1})
        pipeserve.metrics.unregister(watched)
        pipeserve.metrics.unregister(watched)  # idempotent
        pipe({"data": 2})
        assert "nv_inference" not in prometheus_client.generate_latest(registry).decode()
    assert watched.tally.snapshot().success == 1


def test_several_pipes_share_one_registry_under_their_model_names() -> None:
    registry = prometheus_client.CollectorRegistry()
    with ps.pipe({"backend": "Identity"}) as first, ps.pipe({"backend": "Identity"}) as second:
        a = pipeserve.metrics.register(first, model="a", registry=registry)
        b = pipeserve.metrics.register(second, model="b", registry=registry)
        with pytest.raises(ValueError, match="already registered"):
            pipeserve.metrics.register(second, model="a", registry=registry)
        first({"data": 1})
        second([{"data": 1}, {"data": 2}])
        text = prometheus_client.generate_latest(registry).decode()
        assert text.count("# TYPE nv_inference_request_success ") == 1  # one family, two models
        found = samples(text)
        assert value(found, "nv_inference_request_success", model="a", version="1") == 1
        assert value(found, "nv_inference_request_success", model="b", version="1") == 2
        pipeserve.metrics.unregister(a)
        assert 'model="a"' not in prometheus_client.generate_latest(registry).decode()
        pipeserve.metrics.unregister(b)
        assert "nv_inference" not in prometheus_client.generate_latest(registry).decode()


def test_metrics_without_prometheus_client_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with ps.pipe({"backend": "Identity"}) as pipe, pytest.raises(ps.MissingDependencyError, match="metrics"):
        pipeserve.metrics.register(pipe)


# ----------------------------------------------------------------- over the wire
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("metrics-models")
    (folder / "noop.toml").write_text(f'[main]\nbackend = "Identity"\ninstance_num = 2\nmax = 8\n{FP32}{FP32_OUT}')
    (folder / "failing.toml").write_text(f'[main]\nbackend = "ValueError"\n{FP32}{FP32_OUT}')
    traces = folder / "traces.jsonl"
    with Server([str(folder)], port=0, grpc_port=0, cpu_count=2, trace_file=str(traces)) as server:
        yield server, traces


def fp32(module: Any, values: Any) -> Any:
    array = np.asarray(values, dtype=np.float32)
    tensor = module.InferInput("INPUT0", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_server_metrics_count_every_request_over_both_transports(served: tuple[Server, Path]) -> None:
    server, _ = served
    client, grpc_client = th.InferenceServerClient(server.url), tg.InferenceServerClient(server.grpc_url)
    try:
        for i in range(7):
            client.infer("noop", [fp32(th, [[i]])])
        for _ in range(3):
            client.infer("noop", [fp32(th, [[1], [2], [3], [4]])])
        for i in range(5):
            grpc_client.infer("noop", [fp32(tg, [[i]])])
        for module, connection in ((th, client), (tg, grpc_client)):
            with pytest.raises(InferenceServerException):
                connection.infer("failing", [fp32(module, [[1]])])
        with pytest.raises(InferenceServerException):
            client.infer("noop", [fp32(th, [[1]] * 100)])  # over max_batch_size: refused as bad input
    finally:
        client.close()
        grpc_client.close()
    status, headers, body = get(server, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    found = samples(body.decode())
    noop, failing = {"model": "noop", "version": "1"}, {"model": "failing", "version": "1"}
    stats = server.repository.get("noop").pipe.stats()["main"]
    assert value(found, "nv_inference_request_success", **noop) == 15
    assert value(found, "nv_inference_count", **noop) == 7 + 12 + 5
    assert value(found, "nv_inference_exec_count", **noop) == stats["batches"]
    assert value(found, "nv_inference_request_failure", **noop, reason="OTHER") == 1
    assert value(found, "nv_inference_request_failure", **failing, reason="BACKEND") == 2
    assert value(found, "nv_inference_request_success", **failing) == 0
    assert value(found, "nv_inference_pending_request_count", **noop) == 0
    assert value(found, "pipeserve_request_duration_seconds_count", model="noop") == 16
    assert value(found, "pipeserve_node_items_total", model="noop", node="main") == stats["items"] == 24
    assert value(found, "nv_inference_request_duration_us", **noop) > 0
    assert ("process_resident_memory_bytes", frozenset()) in found
    # The Triton-named counters keep Triton's names: no ``_total`` suffix.
    text = body.decode()
    assert "# TYPE nv_inference_request_success counter\n" in text and "nv_inference_request_success_total" not in text
    # The same counts as the statistics extension.
    _, _, stats_body = get(server, "/v2/models/noop/stats")
    inference = json.loads(stats_body)["model_stats"][0]
    assert inference["inference_stats"]["success"]["count"] == 15 and inference["inference_count"] == 24


def test_status_json_and_the_page_files_are_served(served: tuple[Server, Path]) -> None:
    server, _ = served
    status, headers, body = get(server, "/status.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    document = json.loads(body)
    names = [model["name"] for model in document["models"]]
    assert names == ["failing", "noop"] and document["server"]["ready"]
    noop = document["models"][1]
    assert noop["graph"] == [
        {
            "name": "main",
            "kind": "compute",
            "scheduler": "main",
            "next": [],
            "jump": None,
            "filter": noop["graph"][0]["filter"],
        }
    ]
    assert set(noop["nodes"]["main"]) >= {"queued", "items", "batches", "batch_sizes", "busy_seconds", "instances"}
    assert get(server, "/static/../status.json")[0] == 404 and get(server, "/static/nope.js")[0] == 404
    assert get(server, "/nothing")[0] == 404


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[main]\nbackend = "Identity"\n')
    with Server([str(config)], port=0, grpc_port=None, metrics=False) as server:
        status, _, body = get(server, "/metrics")
    assert status == 404 and b"metrics are off" in body


def _roots(traces: Path) -> list[dict[str, Any]]:
    if not traces.exists():
        return []
    return [line for line in map(json.loads, traces.read_text().splitlines()) if line["kind"] == "request"]


def test_a_traceparent_over_http_and_grpc_joins_the_callers_trace(served: tuple[Server, Path]) -> None:
    server, traces = served
    before = len(_roots(traces))
    client, grpc_client = th.InferenceServerClient(server.url), tg.InferenceServerClient(server.grpc_url)
    try:
        client.infer("noop", [fp32(th, [[1], [2]])], headers={"traceparent": CALLER.header()})
        grpc_client.infer("noop", [fp32(tg, [[3]])], headers={"traceparent": CALLER.header()})
        client.infer("noop", [fp32(th, [[4]])], parameters={"trace": True})  # asked by parameter
        client.infer("noop", [fp32(th, [[6]])], parameters={"trace": "false"})  # declined by parameter
        client.infer("noop", [fp32(th, [[5]])])  # not sampled: the rate is 0
    finally:
        client.close()
        grpc_client.close()
    pipe = server.repository.get("noop").pipe
    assert pipe.flush_traces()
    roots = _roots(traces)[before:]
    assert len(roots) == 4  # two items over HTTP, one over gRPC, one asked for
    joined = [r for r in roots if r["trace_id"] == f"{CALLER.trace_id:032x}"]
    assert len(joined) == 3 and all(r["parent_id"] == f"{CALLER.span_id:016x}" for r in joined)
    (own,) = [r for r in roots if r not in joined]
    assert own["parent_id"] is None


def test_the_cpu_budget_shared_by_two_pipes_is_exported_once() -> None:
    registry = prometheus_client.CollectorRegistry()
    budget = ps.CpuBudget(4)
    with (
        ps.pipe({"backend": "Identity", "instance_num": 2}, budget=budget) as first,
        ps.pipe({"backend": "Identity"}, budget=budget) as second,
    ):
        a = pipeserve.metrics.register(first, model="a", registry=registry)
        b = pipeserve.metrics.register(second, model="b", registry=registry)
        found = samples(prometheus_client.generate_latest(registry).decode())
        assert value(found, "pipeserve_cpu_budget_cores", budget="0") == 4
        assert value(found, "pipeserve_cpu_budget_slots", budget="0") == 3
        assert value(found, "pipeserve_cpu_budget_busy", budget="0") == 0
        assert value(found, "pipeserve_cpu_budget_grants_total", budget="0") == 0
        assert not any(key[0].startswith("pipeserve_cpu_budget") and ("budget", "1") in key[1] for key in found)
        pipeserve.metrics.unregister(a)
        pipeserve.metrics.unregister(b)
