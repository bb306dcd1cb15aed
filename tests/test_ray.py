"""pipeserve on Ray (pipeserve.ray): Serve replicas behind the Open Inference Protocol and a
handle, a graph split across deployments, a replica killed under load, and Ray Data; on one
local cluster shared by the session (the ``ray_cluster`` fixture)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.serve")
np = pytest.importorskip("numpy")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import ray  # noqa: E402
from ray import serve  # noqa: E402

import pipeserve as ps  # noqa: E402
import pipeserve.ray as pray  # noqa: E402
from tests.conftest import stop_process, wait_until  # noqa: E402
from tests.test_onnx import affine_model  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    # Ray's own modules warn about their dependencies on import and shutdown.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [3]}],
}


def _tensor_config(model: str) -> dict[str, Any]:
    return {"backend": "Onnx", "model": model, "max": 8, "instance_num": 2, "batching_timeout": 2, **SIGNATURE}


def _http(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _routed(port: int, model: str) -> bool:
    """Whether Ray's proxy routes to the application yet (its route table follows serve.run)."""
    try:
        return _http(port, f"/v2/models/{model}/ready")[0] == 200
    except OSError:
        return False


def _infer_json(port: int, model: str, rows: Any) -> tuple[int, Any]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    status, answer = _http(port, f"/v2/models/{model}/infer", json.dumps(body).encode())
    document = json.loads(answer)
    if status != 200:
        return status, document
    output = document["outputs"][0]
    return status, np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def _samples(metrics: str, name: str) -> dict[str, float]:
    """``replica label -> value`` of the samples of ``name`` in a text exposition."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            replica = re.search(r'replica="([^"]+)"', line)
            assert replica is not None, line
            found[replica.group(1)] = float(line.rsplit(" ", 1)[1])
    return found


def _settled_count(port: int) -> float:
    """The application's ``nv_inference_count`` once two scrapes 0.5 s apart (over two replicas'
    reports, every 0.2 s) agree."""
    last = None
    for _ in range(60):
        samples = _samples(_http(port, "/metrics")[1].decode(), "nv_inference_count")
        total = sum(samples.values()) if len(samples) == 2 else None
        if total is not None and total == last:
            return total
        last = total
        time.sleep(0.5)
    raise AssertionError(f"the figures never settled: {last}")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """The session's one local Ray cluster (2 CPUs) with Serve's HTTP proxy, every server of it on
    loopback; shut down once this module is done, so that it takes no CPU from the tests after."""

    # Without this, Ray turns 127.0.0.1 into the machine's routable address and listens everywhere.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        yield {"port": port, "address": ray.get_runtime_context().gcs_address}
    finally:
        serve.shutdown()
        ray.shutdown()


# ----------------------------------------------------------------------------------- a tensor model
@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> str:
    return affine_model(tmp_path_factory.mktemp("ray") / "affine.onnx")


@pytest.fixture(scope="module")
def tensor_app(ray_cluster: dict[str, Any], affine: str) -> Iterator[pray.PipeHandle]:
    """Two ingress replicas of the tensor model, half a CPU each."""
    handle = pray.run(
        configs={"affine": _tensor_config(affine)},
        app_name="tensor",
        route_prefix="/",
        replicas=2,
        num_cpus=0.5,
        metrics_interval=0.2,
    )
    wait_until(lambda: _routed(ray_cluster["port"], "affine"), timeout=30)
    yield handle
    serve.delete("tensor")


def test_tensor_model_over_handle_and_http_equals_in_process(
    ray_cluster: dict[str, Any], affine: str, tensor_app: pray.PipeHandle
) -> None:
    rows = np.random.default_rng(1).standard_normal((24, 4)).astype(np.float32)
    with ps.pipe(_tensor_config(affine)) as local:
        expected = [local({"data": row})["result"] for row in rows]
    # Over the handle: items updated in place, as pipe(item) does; a list batches in one replica.
    items = [{"data": row} for row in rows[:12]]
    assert tensor_app(items) is items
    for item, want in zip(items, expected[:12], strict=True):
        np.testing.assert_allclose(item["result"], want, rtol=1e-6)
    one = {"data": rows[12]}
    tensor_app(one)
    np.testing.assert_allclose(one["result"], expected[12], rtol=1e-6)
    # Over HTTP, through Ray's proxy: the same protocol and answers as pipeserve serve.
    status, answer = _infer_json(ray_cluster["port"], "affine", rows[13:])
    assert status == 200
    np.testing.assert_allclose(answer, np.stack(expected[13:]), rtol=1e-6)
    # Errors are the protocol's: a bad shape is 400, an unknown model 404.
    status, document = _infer_json(ray_cluster["port"], "affine", rows[:2, :3])
    assert status == 400 and "error" in document
    assert _http(ray_cluster["port"], "/v2/models/nope/infer", b"{}")[0] == 404
    # A bad item fails alone, with the pipe's own error type; bad calls are refused as a pipe does.
    good, bad = {"data": rows[0]}, {"data": np.zeros(5, np.float32)}
    with pytest.raises(ps.RequestError):
        tensor_app([good, bad])
    np.testing.assert_allclose(good["result"], expected[0], rtol=1e-6)
    assert tensor_app([]) == []
    with pytest.raises(ps.InputError):
        tensor_app(["not a dict"])  # type: ignore[list-item]
    # One replica must not load or unload alone: the application is redeployed instead.
    assert _http(ray_cluster["port"], "/v2/repository/models/affine/unload", b"{}")[0] == 501


def test_metrics_and_statistics_cover_every_replica(ray_cluster: dict[str, Any], tensor_app: pray.PipeHandle) -> None:
    port = ray_cluster["port"]
    rows = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32)
    before = _settled_count(port)
    # Enough concurrent calls that both replicas take some (Ray routes to the shorter queue).
    threads = [threading.Thread(target=lambda: [tensor_app({"data": r}) for r in rows]) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert _settled_count(port) - before == 6 * len(rows)
    stats = json.loads(_http(port, "/v2/models/affine/stats")[1])["model_stats"][0]
    all_stats = json.loads(_http(port, "/v2/models/stats")[1])["model_stats"][0]
    metrics = _samples(_http(port, "/metrics")[1].decode(), "nv_inference_count")
    assert stats["inference_count"] == all_stats["inference_count"] == sum(metrics.values())
    # Every replica's process figures are there, labelled: the replicas and the board's absence.
    text = _http(port, "/metrics")[1].decode()
    assert len(_samples(text, "process_cpu_seconds_total")) == 2
    assert 'deployment="pipeserve"' in text


def test_a_replica_killed_under_load_fails_calls_cleanly_and_the_deployment_recovers(
    ray_cluster: dict[str, Any], tensor_app: pray.PipeHandle
) -> None:
    rows = np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        end = time.monotonic() + 120
        for index in range(20_000):  # bounded in count and time; paced, so that Serve can work
            if stop.is_set() or time.monotonic() > end:
                return
            time.sleep(0.005)
            start = time.monotonic()
            try:
                tensor_app({"data": rows[index % len(rows)]}, timeout=5.0)
                outcome = "ok"
            except ps.RequestError as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - recorded: the test fails on any such
                outcome = f"untyped {type(exc).__name__}"
            with lock:
                outcomes.append((outcome, time.monotonic() - start))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(outcomes) >= 20, timeout=30)

    def replicas() -> list[dict[str, str]]:
        named = ray.util.list_named_actors(all_namespaces=True)
        return [a for a in named if a["name"].startswith("SERVE_REPLICA::tensor#pipeserve#")]

    (victim, _) = replicas()
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)

    # Serve replaces the replica while the load goes on.
    def replaced() -> bool:
        names = [a["name"] for a in replicas()]
        status = serve.status().applications["tensor"].deployments["pipeserve"]
        running = status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 2
        return victim["name"] not in names and len(names) == 2 and running

    wait_until(replaced, timeout=90)
    recovered_at = len(outcomes)
    wait_until(lambda: len(outcomes) >= recovered_at + 40, timeout=60)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a call hung"
    kinds = {outcome for outcome, _ in outcomes}
    assert not [k for k in kinds if k.startswith("untyped")], kinds
    assert max(seconds for _, seconds in outcomes) < 5.0 + 2.0  # the deadline, and the grace
    failed = [outcome for outcome, _ in outcomes if outcome != "ok"]
    assert len(failed) <= 8, failed  # calls on the lost replica are sent again to the other
    assert all(outcome == "ok" for outcome, _ in outcomes[recovered_at:])


# ----------------------------------------------------------------------------------- split graphs
def test_a_node_on_its_own_deployment_keeps_results_errors_and_deadlines(
    ray_cluster: dict[str, Any], affine: str
) -> None:
    config = {
        "pre": {"backend": "Identity", "next": "model", **SIGNATURE},
        "model": {**_tensor_config(affine), "deployment": {"name": "model-part", "num_cpus": 0.25}},
    }
    for key in SIGNATURE:
        del config["model"][key]
    slow = {"backend": "Sleep", "sleep_ms": 400, "deployment": {"name": "slow-part", "num_cpus": 0.1}}
    handle = pray.run(
        configs={"split": config, "slow": {"main": slow}},
        app_name="split",
        route_prefix="/split",
        num_cpus=0.25,
        metrics_interval=0.2,
    )
    try:
        rows = np.random.default_rng(4).standard_normal((10, 4)).astype(np.float32)
        with ps.pipe(config) as local:  # the same TOML in one process: `deployment` is a placement
            expected = [local({"data": row})["result"] for row in rows]
        split = pray.PipeHandle(handle.deployment_handle, "split")
        items = [{"data": row} for row in rows]
        split(items)
        np.testing.assert_allclose(np.stack([i["result"] for i in items]), np.stack(expected), rtol=1e-6)
        wait_until(lambda: _http_ok(ray_cluster["port"], "/split/v2/health/ready"), timeout=30)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [10, 4], "data": rows.ravel().tolist()}]}
        status, answer = _http(ray_cluster["port"], "/split/v2/models/split/infer", json.dumps(body).encode())
        assert status == 200
        output = json.loads(answer)["outputs"][0]
        np.testing.assert_allclose(np.array(output["data"]).reshape(10, 3), np.stack(expected), rtol=1e-5)
        # An item the part's node refuses fails alone, with the part's error type.
        good, bad = {"data": rows[0]}, {"data": np.zeros(5, np.float32)}
        with pytest.raises(ps.RequestError) as refused:
            split([good, bad])
        assert "model" in str(refused.value)
        np.testing.assert_allclose(good["result"], expected[0], rtol=1e-6)
        # The request's deadline holds across the hop.
        late = pray.PipeHandle(handle.deployment_handle, "slow")
        start = time.monotonic()
        with pytest.raises(ps.RequestTimeout):
            late({"data": 1}, timeout=0.15)
        assert time.monotonic() - start < 2.0
        assert late({"data": 2}, timeout=5.0)["result"] == 2
        # The part's node reports its own batches in the merged metrics.
        metrics = _http(ray_cluster["port"], "/split/metrics")[1].decode()
        assert 'deployment="model-part"' in metrics and 'node="model"' in metrics
    finally:
        serve.delete("split")


def test_ocr_split_across_deployments_equals_in_process(ray_cluster: dict[str, Any]) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    from pipeserve.examples.ocr import config as ocr_config
    from pipeserve.examples.ocr.samples import encode, text_image

    pages = [encode(text_image(4, seed)) for seed in (1, 2)]
    with ps.pipe(ocr_config()) as local:
        expected = [json.loads(json.dumps(local({"data": page})["result"], default=float)) for page in pages]
    config = ocr_config()
    config["det"]["deployment"] = {"name": "det", "num_cpus": 0.25}
    config["rec"]["deployment"] = {"name": "rec", "num_cpus": 0.25}
    handle = pray.run(configs={"ocr": config}, app_name="ocr", route_prefix="/ocr", num_cpus=0.5)
    try:
        items = [{"data": page} for page in pages]
        handle(items)
        assert [json.loads(json.dumps(i["result"], default=float)) for i in items] == expected
        wait_until(lambda: _http_ok(ray_cluster["port"], "/ocr/v2/health/ready"), timeout=30)
        for page, want in zip(pages, expected, strict=True):
            status, answer = _binary_infer(ray_cluster["port"], "/ocr/v2/models/ocr/infer", page)
            assert status == 200
            assert json.loads(answer) == want
    finally:
        serve.delete("ocr")


def _binary_infer(port: int, path: str, payload: bytes) -> tuple[int, bytes]:
    """One BYTES input ``IMAGE`` with the binary tensor extension; the ``RESULT`` output's text."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": len(payload) + 4},
                }
            ],
            "outputs": [{"name": "RESULT", "parameters": {"binary_data": False}}],
        }
    ).encode()
    body = header + len(payload).to_bytes(4, "little") + payload
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        body,
        {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    return 200, document["outputs"][0]["data"][0].encode()


# ----------------------------------------------------------------------------------- Ray Data
def test_ray_data_runs_rows_through_the_pipe_and_reports_failures_per_row(
    ray_cluster: dict[str, Any], affine: str
) -> None:
    rows = np.random.default_rng(5).standard_normal((300, 4)).astype(np.float32)
    with ps.pipe(_tensor_config(affine)) as local:
        expected = np.stack([local({"data": row})["result"] for row in rows])
    dataset = ray.data.from_items([{"x": row, "id": index} for index, row in enumerate(rows)])
    mapped = pray.map_batches(
        dataset, _tensor_config(affine), columns={"x": "data"}, concurrency=2, num_cpus=0.5, batch_size=50
    )
    out = sorted(mapped.take_all(), key=lambda row: row["id"])
    assert [row["id"] for row in out] == list(range(300))
    np.testing.assert_allclose(np.stack([row["result"] for row in out]), expected, rtol=1e-6)
    assert all(row["error"] is None for row in out)
    # One bad row: reported in its row, the others go on; or, if asked, the job fails.
    broken = ray.data.from_items([{"data": np.zeros(4, np.float32)}] * 5 + [{"data": np.zeros(5, np.float32)}])
    rows_out = pray.map_batches(broken, _tensor_config(affine), batch_size=6, num_cpus=0.5).take_all()
    errors = [row["error"] for row in rows_out]
    assert sum(e is None for e in errors) == 5
    assert next(e for e in errors if e is not None).split(":")[0] in {"InputError", "BackendError"}
    with pytest.raises(Exception, match=r"(InputError|BackendError)"):
        pray.map_batches(broken, _tensor_config(affine), batch_size=6, num_cpus=0.5, errors="raise").take_all()


# ----------------------------------------------------------------------------------- the command
def test_serve_ray_command_deploys_on_a_cluster_and_removes_itself_on_stop(
    ray_cluster: dict[str, Any], affine: str, tmp_path: Path
) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'name = "cli"\nbackend = "Onnx"\nmodel = "{affine}"\nmax = 4\n'
        'inputs = [{ name = "x", datatype = "FP32", shape = [4] }]\n'
        'outputs = [{ name = "y", datatype = "FP32", shape = [3] }]\n'
    )
    command = [sys.executable, "-m", "pipeserve", "serve", str(config), "--ray", "--address", ray_cluster["address"]]
    command += ["--port", str(ray_cluster["port"]), "--app-name", "cli", "--route-prefix", "/cli", "--replicas", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _http_ok(ray_cluster["port"], "/cli/v2/models/cli/ready"), timeout=90)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        status, _ = _http(ray_cluster["port"], "/cli/v2/models/cli/infer", json.dumps(body).encode())
        assert status == 200
    finally:
        stop_process(process, grace=60)
    assert process.returncode == 0, process.stdout.read().decode() if process.stdout else ""
    assert "cli" not in serve.status().applications


def _http_ok(port: int, path: str) -> bool:
    try:
        return _http(port, path)[0] == 200
    except OSError:
        return False
