"""The Remote backend (NOTE [remote calls]): a node whose model another server serves, batched,
with deadlines, retries and a circuit breaker. The peers are pipeserve servers started here."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("uvicorn")
pytest.importorskip("tritonclient.grpc")

import pipeserve as ps  # noqa: E402
from pipeserve.server import Server  # noqa: E402
from tests.conftest import http_ready, wait_until  # noqa: E402
from tests.test_onnx import affine_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FP32_1 = (
    'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
    'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'
)


@ps.register_backend("RemoteTestDecode", replace=True)
def decode(items: list[dict[str, Any]]) -> list[Any]:
    """A local stage before the remote one: a number -> a feature vector of 4."""
    return [np.arange(4, dtype=np.float32) * float(item["data"]) + 1 for item in items]


@ps.register_backend("RemoteTestPost", replace=True)
def post(items: list[dict[str, Any]]) -> list[Any]:
    """A local stage after it: the scores -> (best class, rounded scores)."""
    return [{"best": int(np.argmax(item["data"])), "scores": np.round(item["data"], 4).tolist()} for item in items]


@ps.register_backend("RemoteTestRefuse", replace=True)
def refuse(items: list[dict[str, Any]]) -> list[Any]:
    """Fails a batch holding a negative value (the peer's node then isolates it)."""
    for item in items:
        if float(np.asarray(item["data"]).ravel()[0]) < 0:
            raise ValueError("negative input")
    return [item["data"] for item in items]


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("peer-models")
    model = affine_model(folder / "affine.onnx")
    (folder / "classifier.toml").write_text(
        f'[main]\nbackend = "Onnx"\nmodel = "{model}"\nmax = 16\nmax_batch_size = 16\n'
        'inputs = [{ name = "x", datatype = "FP32", shape = [4] }]\n'
        'outputs = [{ name = "y", datatype = "FP32", shape = [3] }]\n'
    )
    (folder / "noop.toml").write_text(f'[main]\nbackend = "Identity"\nmax = 64\nmax_batch_size = 64\n{FP32_1}')
    (folder / "single.toml").write_text(f'[main]\nbackend = "Identity"\nmax_batch_size = 1\n{FP32_1}')
    (folder / "refuse.toml").write_text(f'[main]\nbackend = "RemoteTestRefuse"\nmax = 8\n{FP32_1}')
    (folder / "slow.toml").write_text(f'[main]\nbackend = "Sleep"\nsleep_ms = 2000\n{FP32_1}')
    with Server([str(folder)], port=0, grpc_port=0, cpu_count=2) as server:
        yield server


def url_of(server: Server, scheme: str) -> str:
    port = server.port if scheme == "http" else server.grpc_port
    return f"{scheme}://127.0.0.1:{port}"


def graph(classifier: dict[str, Any]) -> dict[str, Any]:
    return {
        "decode": {"backend": "RemoteTestDecode", "next": "classify", "max": 8},
        "classify": {**classifier, "next": "post"},
        "post": {"backend": "RemoteTestPost", "max": 8},
    }


def requests_served(server: Server, model: str) -> tuple[int, int]:
    """(requests, items) the peer served for ``model`` so far."""
    counters = server.repository.get(model).counters()
    return counters.success.count + counters.fail.count, counters.inference_count


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_remote_classifier_gives_the_local_graphs_results(peer: Server, scheme: str, tmp_path: Path) -> None:
    model = affine_model(tmp_path / "affine.onnx")
    remote = {"backend": "Remote", "url": url_of(peer, scheme), "model": "classifier", "instance_num": 2}
    items = [{"data": i - 10} for i in range(20)]
    with ps.pipe(graph(remote)) as remote_pipe, ps.pipe(graph({"backend": "Onnx", "model": model})) as local_pipe:
        assert remote_pipe.describe().nodes["classify"].batch_range == (1, 16)  # the peer's max_batch_size
        got = [dict(item) for item in items]
        want = [dict(item) for item in items]
        remote_pipe(got)
        local_pipe(want)
    assert [g["result"] for g in got] == [w["result"] for w in want]


def test_concurrent_items_leave_as_few_requests_as_batching_allows(peer: Server) -> None:
    config = {"backend": "Remote", "url": url_of(peer, "http"), "model": "noop", "batching_timeout": 50}
    before = requests_served(peer, "noop")
    with ps.pipe(config) as pipe:
        items = [{"data": np.array([float(i)], np.float32)} for i in range(40)]
        pipe(items)  # admitted together: they batch at the remote node
        assert [float(item["result"][0]) for item in items] == [float(i) for i in range(40)]
        batches = pipe.stats()["main"]["batches"]
    requests, served = (a - b for a, b in zip(requests_served(peer, "noop"), before, strict=True))
    assert served == 40 and requests == batches <= 2  # 40 items: one request per node batch


def test_a_model_taking_one_item_gets_one_item_per_request(peer: Server) -> None:
    config = {"backend": "Remote", "url": url_of(peer, "grpc"), "model": "single", "instance_num": 4}
    before = requests_served(peer, "single")
    with ps.pipe(config) as pipe:
        assert pipe.max() == 1
        futures = [pipe.submit({"data": np.array([float(i)], np.float32)}) for i in range(12)]
        assert [float(f.result(10)["result"][0]) for f in futures] == [float(i) for i in range(12)]
    assert tuple(a - b for a, b in zip(requests_served(peer, "single"), before, strict=True)) == (12, 12)


def test_items_the_peer_refuses_fail_alone(peer: Server) -> None:
    config = {"backend": "Remote", "url": url_of(peer, "http"), "model": "refuse", "max": 8, "batching_timeout": 50}
    with ps.pipe(config) as pipe:
        items = [{"data": np.array([v], np.float32)} for v in (1.0, 2.0, -3.0, 4.0)]
        futures = [pipe.submit(item) for item in items]
        outcomes = [f.exception(10) for f in futures]
    assert [type(e).__name__ if e else None for e in outcomes] == [None, None, "RemoteError", None]
    error = outcomes[2]
    assert isinstance(error, ps.RemoteError) and error.peer == url_of(peer, "http") and error.node == "main"
    assert "negative input" in str(error)


def test_the_deadline_travels_and_bounds_the_wait(peer: Server) -> None:
    config = {"backend": "Remote", "url": url_of(peer, "http"), "model": "slow", "breaker_failures": 100}
    with ps.pipe(config) as pipe:
        start = time.monotonic()
        with pytest.raises((ps.RemoteError, ps.RequestTimeout)):
            pipe({"data": np.array([1.0], np.float32)}, timeout=0.3)
        assert time.monotonic() - start < 1.5  # the peer's model takes 2 s


def test_a_deadline_that_passes_does_not_open_the_breaker(peer: Server) -> None:
    from pipeserve.backends import remote

    config = {"backend": "Remote", "url": url_of(peer, "grpc"), "model": "slow", "breaker_failures": 1}
    with ps.pipe(config) as pipe:
        with pytest.raises((ps.RemoteError, ps.RequestTimeout)):
            pipe({"data": np.array([1.0], np.float32)}, timeout=0.2)
    assert not remote._breakers[(url_of(peer, "grpc"), "slow")].open  # the peer is up, only slow


def test_the_nodes_max_caps_the_peers(peer: Server) -> None:
    config = {"backend": "Remote", "url": url_of(peer, "http"), "model": "classifier", "max": 4}
    with ps.pipe(config) as pipe:
        assert pipe.max() == 4


def declared_without_peer(model: str, **keys: Any) -> dict[str, Any]:
    """A Remote node on a port nobody listens on, its signature declared so that it starts."""
    return {
        "backend": "Remote",
        "url": f"http://127.0.0.1:{_free_port()}",
        "model": model,
        "max_batch_size": 8,
        "remote_inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "key": "data"}],
        "remote_outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1], "key": "result"}],
        **keys,
    }


def test_a_probe_that_fails_before_its_request_leaves_the_breaker_ready() -> None:
    config = declared_without_peer("probe", retries=1, breaker_failures=1, breaker_cooldown=50)
    with ps.pipe(config) as pipe:
        with pytest.raises(ps.RemoteError, match="unreachable"):
            pipe({"data": np.array([1.0], np.float32)})  # opens the breaker
        time.sleep(0.1)
        with pytest.raises(ps.ContractError):
            pipe({"data": "not a number"})  # the probe fails on this side, before any request
        with pytest.raises(ps.RemoteError, match="unreachable"):  # the next batch is a probe again
            pipe({"data": np.array([1.0], np.float32)})


def test_a_missing_peer_is_a_config_error_naming_it() -> None:
    port = _free_port()
    config = {"backend": "Remote", "url": f"http://127.0.0.1:{port}", "model": "m", "connect_timeout": 200}
    with pytest.raises(ps.ConfigError, match=f"127.0.0.1:{port}"):
        ps.pipe(config)


def test_a_declared_signature_needs_no_peer_at_start() -> None:
    config = declared_without_peer("m", retries=2, breaker_failures=2, breaker_cooldown=60000)
    with ps.pipe(config) as pipe:
        assert pipe.max() == 8
        for _ in range(2):  # two failed batches open the breaker...
            with pytest.raises(ps.RemoteError, match="unreachable"):
                pipe({"data": np.array([1.0], np.float32)})
        with pytest.raises(ps.RemoteError, match="circuit open"):  # ...then it fails at once
            pipe({"data": np.array([1.0], np.float32)})


def test_remote_instances_take_no_share_of_the_cores(peer: Server) -> None:
    config = {
        "work": {"backend": "Identity", "next": "far", "instance_num": 2},
        "far": {"backend": "Remote", "url": url_of(peer, "http"), "model": "noop", "instance_num": 6},
    }
    with ps.pipe(config, cpu_count=4) as pipe:
        assert pipe.describe().nodes["work"].cpu_threads == 2  # 4 cores over 2 computing instances
    assert ps.instance_count(config) == 2  # what a server shares its cores by
    grouped = {"backend": "Remote&Identity", "instance_num": "6&2", "url": url_of(peer, "http"), "model": "noop"}
    with ps.pipe(grouped, cpu_count=4) as pipe:  # per bucket group: only Identity's 2 compute
        assert pipe.describe().nodes["main"].cpu_threads == 2
    assert ps.instance_count(grouped) == 2


def test_a_traced_request_continues_its_trace_on_the_peer(tmp_path: Path) -> None:
    config = tmp_path / "noop.toml"
    config.write_text(f'[main]\nbackend = "Identity"\nmax = 8\n{FP32_1}')
    traces = tmp_path / "peer-traces.jsonl"
    ours: list[tuple[ps.Span, ...]] = []
    with Server([str(config)], port=0, grpc_port=0, trace_file=str(traces)) as far:
        for scheme in ("http", "grpc"):
            remote = {"backend": "Remote", "url": url_of(far, scheme), "model": "noop"}
            with ps.pipe(remote) as pipe:
                pipe.add_trace_sink(ours.append)
                pipe({"data": np.array([1.0], np.float32)}, trace=True)
                pipe({"data": np.array([2.0], np.float32)})  # not traced: the peer records nothing
                assert pipe.flush_traces()
        assert far.repository.get("noop").pipe.flush_traces()
    peer_roots = [line for line in map(json.loads, traces.read_text().splitlines()) if line["kind"] == "request"]
    assert len(ours) == 2 and len(peer_roots) == 2
    for trace, root in zip(ours, peer_roots, strict=True):
        (visit,) = [span for span in trace if span.kind == "node"]
        assert root["trace_id"] == f"{visit.trace_id:032x}" and root["parent_id"] == f"{visit.span_id:016x}"


# ----------------------------------------------------------------- a peer that dies and comes back
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def peer_process(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "pipeserve", "serve", str(config), "--port", str(port), "--grpc-port", "-1"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_ready(port), timeout=30)
        yield process
    finally:
        process.kill()
        process.wait(10)


def test_a_peer_killed_under_load_then_restarted(tmp_path: Path) -> None:
    config = tmp_path / "noop.toml"
    config.write_text(f'[main]\nbackend = "Identity"\nmax = 16\n{FP32_1}')
    port = _free_port()
    remote = {
        "backend": "Remote",
        "url": f"http://127.0.0.1:{port}",
        "model": "noop",
        "instance_num": 2,
        "breaker_failures": 3,
        "breaker_cooldown": 200,
    }
    deadline = 1.0
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    with peer_process(config, port) as process, ps.pipe(remote) as pipe:
        stop = threading.Event()

        def client() -> None:
            for _ in range(400):  # bounded
                if stop.is_set():
                    return
                start = time.monotonic()
                try:
                    pipe({"data": np.array([1.0], np.float32)}, timeout=deadline)
                    kind = "ok"
                except (ps.RemoteError, ps.RequestTimeout) as exc:
                    kind = type(exc).__name__
                with lock:
                    outcomes.append((kind, time.monotonic() - start))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(kind == "ok" for kind, _ in outcomes) >= 50, timeout=20)
        process.kill()
        process.wait(10)
        wait_until(lambda: sum(kind != "ok" for kind, _ in outcomes) >= 20, timeout=20)
        stop.set()
        for thread in threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in threads), "a call hung"
        kinds = {kind for kind, _ in outcomes}
        assert kinds <= {"ok", "RemoteError", "RequestTimeout"}
        assert max(seconds for _, seconds in outcomes) < deadline + 1.0  # nobody waited past the deadline
        with contextlib.suppress(ps.RemoteError):
            pipe({"data": np.array([1.0], np.float32)}, timeout=deadline)
        # The peer comes back on the same port: the same pipe serves again.
        with peer_process(config, port):

            def recovered() -> bool:
                try:
                    item = pipe({"data": np.array([7.0], np.float32)}, timeout=deadline)
                except ps.RemoteError:
                    time.sleep(0.05)
                    return False
                return float(item["result"][0]) == 7.0

            wait_until(recovered, timeout=20)
    assert json.dumps(sorted({kind for kind, _ in outcomes})) != "[]"
