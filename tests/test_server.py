"""The server against Triton's own clients: tritonclient (HTTP and gRPC) and perf_analyzer, on a
server started by the tests on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("uvicorn")
pytest.importorskip("onnx")

from tritonclient.utils import InferenceServerException  # noqa: E402

import pipeserve as ps  # noqa: E402
from pipeserve.server import Server  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.test_onnx import affine_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GATE = threading.Event()
GATE.set()
ENTERED = threading.Semaphore(0)
SEEN: list[float] = []


@ps.register_backend("ServerTestGate", replace=True)
class Gate(ps.Backend):
    """``result = data``, after waiting for the test's gate; records what it saw."""

    def forward(self, items: list[dict[str, Any]]) -> None:
        ENTERED.release()
        assert GATE.wait(30), "test gate never opened"
        for item in items:
            SEEN.append(float(np.asarray(item["data"]).ravel()[0]))
            item["result"] = item["data"]


@ps.register_backend("ServerTestFail", replace=True)
def fail(items: list[dict[str, Any]]) -> list[Any]:
    raise ValueError("boom")


FP32 = 'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
FP32_OUT = 'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    (folder / "noop.toml").write_text(f'[main]\nbackend = "Identity"\ninstance_num = 2\nmax = 8\n{FP32}{FP32_OUT}')
    model = affine_model(folder / "affine.onnx")
    (folder / "classifier.toml").write_text(
        f'[main]\nbackend = "Onnx"\nmodel = "{model}"\nmax = 8\nwarmup = 2\n'
        'inputs = [{ name = "x", datatype = "FP32", shape = [4] }]\n'
        'outputs = [{ name = "y", datatype = "FP32", shape = [3] }]\n'
    )
    (folder / "gate.toml").write_text(f'[main]\nbackend = "ServerTestGate"\nmax_queue = 2\n{FP32}{FP32_OUT}')
    (folder / "failing.toml").write_text(f'[main]\nbackend = "ServerTestFail"\n{FP32}{FP32_OUT}')
    (folder / "json.toml").write_text('name = "plain"\n[main]\nbackend = "Identity"\n')
    return folder


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[Server]:
    sources = [str(models)]
    try:
        import rapidocr_onnxruntime  # noqa: F401

        sources.append("ocr")
    except ImportError:
        pass
    with Server(sources, port=0, grpc_port=0, cpu_count=2) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[Any]:
    # Closed here: left to the garbage collector, tritonclient's __del__ may run on another
    # test's thread, where gevent fails, and that test gets the unraisable exception.
    with closing(th.InferenceServerClient(server.url)) as own:
        yield own


@pytest.fixture
def grpc_client(server: Server) -> Iterator[Any]:
    with closing(tg.InferenceServerClient(server.grpc_url)) as own:
        yield own


def fp32(module: Any, name: str, values: Any, binary: bool = True) -> Any:
    array = np.asarray(values, dtype=np.float32)
    tensor = module.InferInput(name, list(array.shape), "FP32")
    if module is th:
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def post(
    server: Server, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def node_stats(server: Server, model: str) -> dict[str, Any]:
    return server.repository.get(model).pipe.stats()["main"]


# ----------------------------------------------------------------- health and metadata
def test_health_metadata_and_config_over_both_transports(client: Any, grpc_client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("noop")
    assert grpc_client.is_server_live() and grpc_client.is_server_ready() and grpc_client.is_model_ready("noop")
    assert not grpc_client.is_model_ready("nope")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "pipeserve" and {"binary_tensor_data", "statistics", "model_repository"} <= set(
        metadata["extensions"]
    )
    model = client.get_model_metadata("classifier")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert grpc_client.get_model_metadata("classifier").inputs[0].shape == [-1, 4]
    config = client.get_model_config("classifier")
    assert config["max_batch_size"] == 64 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [4] and "dynamic_batching" in config
    assert grpc_client.get_model_config("classifier").config.max_batch_size == 64


# ----------------------------------------------------------------- inference
def test_fp32_through_onnx_equals_in_process_json_binary_and_grpc(
    client: Any, grpc_client: Any, models: Path, server: Server
) -> None:
    assert node_stats(server, "classifier")["items"] >= 2  # its warm-up ran before it was ready
    rows = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    with ps.pipe(str(models / "classifier.toml")) as local:
        expected = np.stack([local({"data": row})["result"] for row in rows])
    for binary in (True, False):
        result = client.infer(
            "classifier",
            [fp32(th, "x", rows, binary)],
            outputs=[th.InferRequestedOutput("y", binary_data=binary)],
            request_id="r1",
        )
        assert result.get_response()["id"] == "r1"
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)
    result = grpc_client.infer("classifier", [fp32(tg, "x", rows)], request_id="g1")
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6)
    assert result.get_response().id == "g1"


def test_a_batch_of_n_becomes_n_items_that_batch_with_others(client: Any, server: Server) -> None:
    before = node_stats(server, "noop")["items"]
    result = client.infer("noop", [fp32(th, "INPUT0", [[1], [2], [3], [4], [5]])])
    assert result.as_numpy("OUTPUT0").ravel().tolist() == [1, 2, 3, 4, 5]
    assert node_stats(server, "noop")["items"] - before == 5
    stats = client.get_inference_statistics("noop")["model_stats"][0]
    assert stats["inference_count"] >= 5 and stats["inference_stats"]["success"]["count"] >= 1


def test_json_documents_for_a_pipe_that_declares_nothing(client: Any) -> None:
    tensor = th.InferInput("data", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b'{"a": 1}'], [b"[1, 2]"]], dtype=object))
    result = client.infer("plain", [tensor])
    assert [json.loads(v) for v in result.as_numpy("result").ravel()] == [{"a": 1}, [1, 2]]


def test_jpeg_bytes_through_ocr_equal_in_process(client: Any, grpc_client: Any, server: Server) -> None:
    if "ocr" not in [m.name for m in server.repository.ready_models()]:
        pytest.skip("rapidocr-onnxruntime is not installed")
    from pipeserve.examples.ocr.samples import encode, text_image

    jpeg = encode(text_image(5, 2))
    expected = json.loads(json.dumps(server.repository.get("ocr").pipe({"data": jpeg})["result"], default=float))
    tensor = th.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
    assert json.loads(client.infer("ocr", [tensor]).as_numpy("RESULT")[0, 0]) == expected
    tensor = tg.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
    assert json.loads(grpc_client.infer("ocr", [tensor]).as_numpy("RESULT")[0, 0]) == expected


def test_gzip_both_ways(client: Any) -> None:
    result = client.infer(
        "noop",
        [fp32(th, "INPUT0", [[7]])],
        request_compression_algorithm="gzip",
        response_compression_algorithm="deflate",
    )
    assert result.as_numpy("OUTPUT0").ravel().tolist() == [7]


# ----------------------------------------------------------------- errors
def _http_error(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), info.value.message()


def _grpc_error(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), info.value.message()


def test_bad_requests_say_what_was_expected(client: Any, grpc_client: Any, server: Server) -> None:
    assert _http_error(lambda: client.get_model_metadata("nope"))[0] == "404"
    assert _grpc_error(lambda: grpc_client.infer("nope", [fp32(tg, "INPUT0", [[1]])]))[0] == "StatusCode.NOT_FOUND"
    wrong_type = th.InferInput("INPUT0", [1, 1], "INT32")
    wrong_type.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    status, message = _http_error(lambda: client.infer("noop", [wrong_type]))
    assert status == "400" and "FP32" in message and "INT32" in message
    status, message = _http_error(lambda: client.infer("noop", [fp32(th, "INPUT0", [[1, 2]])]))
    assert status == "400" and "shape" in message
    status, message = _grpc_error(lambda: grpc_client.infer("classifier", [fp32(tg, "INPUT0", [[1]])]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "'x'" in message
    status, _, body = post(server, "/v2/models/noop/infer", b"{not json")
    assert status == 400 and "error" in json.loads(body)
    status, _, body = post(server, "/v2/models/noop/infer", b'{"inputs": []}')
    assert status == 400 and "INPUT0" in json.loads(body)["error"]
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    connection.putrequest("POST", "/v2/models/noop/infer")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
    status, _, body = post(server, "/v2/nothing/here", b"")
    assert status == 404 and json.loads(body) == {"error": "Not Found"}


def test_backend_errors_are_500_naming_the_node(client: Any, grpc_client: Any) -> None:
    status, message = _http_error(lambda: client.infer("failing", [fp32(th, "INPUT0", [[1]])]))
    assert status == "500" and "node 'main'" in message and "boom" in message
    status, message = _grpc_error(lambda: grpc_client.infer("failing", [fp32(tg, "INPUT0", [[1]])]))
    assert status == "StatusCode.INTERNAL" and "ServerTestFail" in message


def _occupy(url: str) -> threading.Thread:
    """Close the gate and send one request that then holds the gate model's only instance."""
    GATE.clear()
    while ENTERED.acquire(blocking=False):
        pass
    first = threading.Thread(target=_swallow_at, args=(url, 0))
    first.start()
    assert ENTERED.acquire(timeout=10)
    return first


def test_overload_is_503_with_retry_after_and_timeout_is_504(client: Any, grpc_client: Any, server: Server) -> None:
    first = _occupy(server.url)
    dropped = node_stats(server, "gate")["dropped"]
    try:
        # The request's own timeout (microseconds) bounds it inside the pipe.
        status, message = _http_error(lambda: client.infer("gate", [fp32(th, "INPUT0", [[1]])], timeout=200_000))
        assert status == "504" and "deadline" in message
        status, message = _grpc_error(lambda: grpc_client.infer("gate", [fp32(tg, "INPUT0", [[1]])], timeout=200_000))
        assert status == "StatusCode.DEADLINE_EXCEEDED"
        waiting = [threading.Thread(target=_swallow, args=(server, i)) for i in (2, 3)]
        for thread in waiting:
            thread.start()
        # The two timed-out items gave their places to these two (a full queue drops dead tasks).
        wait_until(lambda: node_stats(server, "gate")["dropped"] == dropped + 2)
        wait_until(lambda: node_stats(server, "gate")["queued"] == 2)
        body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [4]}]})
        status, headers, payload = post(server, "/v2/models/gate/infer", body.encode())
        assert status == 503 and headers["retry-after"] == "1" and "queue full" in json.loads(payload)["error"]
        status, _ = _grpc_error(lambda: grpc_client.infer("gate", [fp32(tg, "INPUT0", [[5]])]))
        assert status == "StatusCode.UNAVAILABLE"
    finally:
        GATE.set()
    first.join(10)
    for thread in waiting:
        thread.join(10)
    assert 1.0 not in SEEN and 4.0 not in SEEN  # expired and refused items never ran


def _swallow(server: Server, value: int) -> None:
    _swallow_at(server.url, value)


def _swallow_at(url: str, value: int) -> None:
    # tritonclient's HTTP client is gevent-based: close it on the thread that made it, or the
    # collector may finalise it on another thread, where its event loop does not exist.
    with closing(th.InferenceServerClient(url)) as own:
        own.infer("gate", [fp32(th, "INPUT0", [[value]])])


def test_a_client_that_goes_away_has_its_request_cancelled(client: Any, grpc_client: Any, server: Server) -> None:
    first = _occupy(server.url)
    dropped = node_stats(server, "gate")["dropped"]
    failed = server.repository.get("gate").counters().fail.count
    try:
        body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [11]}]})
        raw = socket.create_connection((server.host, server.port))
        raw.sendall(
            f"POST /v2/models/gate/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        wait_until(lambda: node_stats(server, "gate")["queued"] == 1)
        raw.close()  # the client goes away
        wait_until(lambda: server.repository.get("gate").counters().fail.count == failed + 1)
        status, _ = _grpc_error(lambda: grpc_client.infer("gate", [fp32(tg, "INPUT0", [[12]])], client_timeout=0.3))
        assert status == "StatusCode.DEADLINE_EXCEEDED"
        wait_until(lambda: server.repository.get("gate").counters().fail.count == failed + 2)
    finally:
        GATE.set()
    first.join(10)
    wait_until(lambda: node_stats(server, "gate")["dropped"] == dropped + 2)
    assert 11.0 not in SEEN and 12.0 not in SEEN


# ----------------------------------------------------------------- the repository
def _send_until(client: Any, done: threading.Event, errors: list[BaseException]) -> None:
    """Requests back to back until ``done`` (at least 20), checking each answer."""
    for count in range(5000):
        if done.is_set() and count > 20:
            return
        try:
            assert client.infer("noop", [fp32(th, "INPUT0", [[count]])]).as_numpy("OUTPUT0")[0, 0] == count
        except BaseException as exc:  # noqa: BLE001 - collected for the test's assertion
            errors.append(exc)
            return


def test_load_reload_and_unload_under_traffic(client: Any, grpc_client: Any, server: Server) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def traffic() -> None:
        with closing(th.InferenceServerClient(server.url)) as own:
            _send_until(own, done, errors)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        config = {"backend": "Identity", "inputs": [{"name": "IN", "datatype": "INT64", "shape": [2]}]}
        config["outputs"] = [{"name": "OUT", "datatype": "INT64", "shape": [2]}]
        client.load_model("extra", config=json.dumps(config))
        tensor = th.InferInput("IN", [1, 2], "INT64")
        tensor.set_data_from_numpy(np.array([[3, 4]], dtype=np.int64))
        assert client.infer("extra", [tensor]).as_numpy("OUT").tolist() == [[3, 4]]
        for _ in range(5):
            client.load_model("noop")  # a reload: the old pipe drains, traffic goes on
        grpc_client.load_model("extra2", config=json.dumps(config))  # the same over gRPC
        grpc_tensor = tg.InferInput("IN", [1, 2], "INT64")
        grpc_tensor.set_data_from_numpy(np.array([[5, 6]], dtype=np.int64))
        assert grpc_client.infer("extra2", [grpc_tensor]).as_numpy("OUT").tolist() == [[5, 6]]
        client.unload_model("extra2")
        grpc_client.unload_model("extra")
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
        assert index["extra"]["state"] == "UNAVAILABLE" and index["noop"]["state"] == "READY"
        assert _http_error(lambda: client.infer("extra", [tensor]))[0] == "404"
        assert [m.name for m in grpc_client.get_model_repository_index().models if m.state == "READY"]
        client.unload_model("never-heard-of")  # as Triton: nothing to do
    finally:
        done.set()
        worker.join(30)
    assert not errors, errors[:3]


# ----------------------------------------------------------------- the command line and shutdown
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeserve", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_config_that_fails_to_load_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[main]\nbackend = "NoSuchBackend"\n')
    process = _serve(str(bad), "--port", str(_free_port()), "--grpc-port", "-1")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "NoSuchBackend" in stderr


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(f'[main]\nbackend = "Sleep"\nsleep_ms = 100\nmax = 4\ninstance_num = 2\n{FP32}{FP32_OUT}')
    port = _free_port()
    process = _serve(str(config), "--port", str(port), "--grpc-port", "-1", "--access-log")
    try:
        with closing(th.InferenceServerClient(f"127.0.0.1:{port}")) as client:
            wait_until(lambda: _ready(client), timeout=60)
        outcomes: list[Any] = []

        def one(value: int) -> None:
            with closing(th.InferenceServerClient(f"127.0.0.1:{port}")) as own:
                outcomes.append(own.infer("slow", [fp32(th, "INPUT0", [[value]])]).as_numpy("OUTPUT0")[0, 0])

        callers = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for caller in callers:
            caller.start()
        wait_until(lambda: _finished(port) >= 1)  # the rest are in flight now
        process.send_signal(signal.SIGTERM)
        for caller in callers:
            caller.join(30)
        assert sorted(outcomes) == list(range(12))  # every accepted request finished
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    _, stderr = process.communicate()
    assert "POST /v2/models/slow/infer 200" in stderr  # the access log


def _ready(client: Any) -> bool:
    try:
        return bool(client.is_server_ready())
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def _finished(port: int) -> int:
    with closing(th.InferenceServerClient(f"127.0.0.1:{port}")) as client:
        stats = client.get_inference_statistics("slow")["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


# ----------------------------------------------------------------- perf_analyzer
def _perf_analyzer() -> str | None:
    candidates = [os.environ.get("PIPESERVE_PERF_ANALYZER", ""), str(ROOT / ".venv/perf_analyzer/bin/perf_analyzer")]
    found = shutil.which("perf_analyzer")
    return next((c for c in [*candidates, found] if c and os.access(c, os.X_OK)), None)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_profiles_a_model(server: Server, protocol: str) -> None:
    binary = _perf_analyzer()
    if binary is None:
        pytest.skip("perf_analyzer is not installed (scripts/test.sh installs it)")
    url = server.url if protocol == "http" else server.grpc_url
    out = subprocess.run(
        [binary, "-m", "noop", "-u", url, "-i", protocol, "--concurrency-range", "2:2",
         "--measurement-mode", "count_windows", "--measurement-request-count", "300", "--max-trials", "10",
         "--stability-percentage", "100"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Throughput" in out.stdout and "Server:" in out.stdout and "queue" in out.stdout  # the server-side breakdown


# ----------------------------------------------------------------- pipeserve bench --url
@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_bench_drives_a_remote_model(server: Server, scheme: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeserve.cli import main

    url = f"{scheme}://{server.url if scheme == 'http' else server.grpc_url}"
    assert main(["bench", "noop", "--url", url, "--clients", "1,4", "--seconds", "0.5", "--data", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "clients" in line and "|" in line]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert [row[1] for row in rows] == ["1", "4"]
    assert all(int(row[2].replace(",", "")) > 0 and row[3] == "0" for row in rows)  # requests done, no errors


def test_the_models_of_one_server_share_the_cores(tmp_path: Path) -> None:
    from pipeserve.server import Repository

    for name, count in (("a", 2), ("b", 6)):
        (tmp_path / f"{name}.toml").write_text(f'[main]\nbackend = "Identity"\ninstance_num = {count}\n')
    repository = Repository([str(tmp_path)], cpu_count=16)
    repository.load_all()
    try:
        nodes = {m.name: m.pipe.describe().nodes["main"] for m in repository.ready_models()}
        assert {name: node.instances for name, node in nodes.items()} == {"a": 2, "b": 6}
        # 16 cores over 8 instances: 2 threads each, whichever model was built first.
        assert {name: node.cpu_threads for name, node in nodes.items()} == {"a": 2, "b": 2}
        # ...and one elastic CPU budget (NOTE [elastic budget]): every instance has its slot.
        pipes = [m.pipe for m in repository.ready_models()]
        assert pipes[0].budget is pipes[1].budget is repository.budget
        assert repository.budget.cores == 16 and repository.budget.statistics().slots == 8
    finally:
        repository.close(5)
