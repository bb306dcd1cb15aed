"""The Remote backend against a real Triton Inference Server (CPU, Python backend).

scripts/test.sh installs one with ../shared/tools/get-triton.sh into .venv/triton; elsewhere set
PIPESERVE_TRITON to a ``tritonserver`` (the tests skip when there is none).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("tritonclient.grpc")

import pipeserve as ps  # noqa: E402
from tests.conftest import http_ready, stop_process, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRITON = Path(os.environ.get("PIPESERVE_TRITON", ROOT / ".venv" / "triton" / "bin" / "tritonserver"))

CONFIG = """name: "double"
backend: "python"
max_batch_size: 32
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
SINGLE = """name: "single"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (2 * x).astype(np.float32))]))
        return responses
"""


@ps.register_backend("TritonTestDouble", replace=True)
def double(items: list[dict[str, Any]]) -> list[Any]:
    """What the Triton model computes, in process."""
    return [(2 * np.asarray(item["data"], np.float32)).astype(np.float32) for item in items]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    if not TRITON.exists() or shutil.which(str(TRITON)) is None:
        pytest.skip(f"no tritonserver at {TRITON} (scripts/test.sh installs one; or set PIPESERVE_TRITON)")
    repository = tmp_path_factory.mktemp("triton-models")
    for name, config in (("double", CONFIG), ("single", SINGLE)):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(config)
        (repository / name / "1" / "model.py").write_text(MODEL)
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = (repository / "triton.log").open("wb")
    process = subprocess.Popen(
        [
            str(TRITON),
            f"--model-repository={repository}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"tritonserver exited: {(repository / 'triton.log').read_text()[-2000:]}")
            return http_ready(http_port)

        wait_until(ready, timeout=90)
        yield http_port, grpc_port
    finally:
        stop_process(process)
        log.close()


def _statistics(http_port: int, model: str = "double") -> tuple[int, int, int]:
    """Triton's (requests, inferences, executions) of ``model`` so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/stats", timeout=5) as response:
        entry = json.loads(response.read())["model_stats"][0]
    requests = int(entry["inference_stats"]["success"]["count"])
    return requests, int(entry["inference_count"]), int(entry["execution_count"])


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_triton_model_as_a_node_batches_across_the_wire(triton: tuple[int, int], scheme: str) -> None:
    http_port, grpc_port = triton
    url = f"http://127.0.0.1:{http_port}" if scheme == "http" else f"grpc://127.0.0.1:{grpc_port}"
    remote = {"backend": "Remote", "url": url, "model": "double", "batching_timeout": 50}
    before = _statistics(http_port)
    values = [np.array([float(i)], np.float32) for i in range(48)]
    with ps.pipe(remote) as remote_pipe, ps.pipe({"backend": "TritonTestDouble", "max": 32}) as local_pipe:
        assert remote_pipe.max() == 32  # read from Triton's configuration
        got = remote_pipe([{"data": v} for v in values])
        want = local_pipe([{"data": v} for v in values])
        node_batches = remote_pipe.stats()["main"]["batches"]
    assert [float(g["result"][0]) for g in got] == [float(w["result"][0]) for w in want]
    requests, inferences, executions = (a - b for a, b in zip(_statistics(http_port), before, strict=True))
    assert inferences == 48 and requests == node_batches <= 3  # 48 items in a few batched requests
    assert executions <= requests


def test_a_triton_model_without_batching_takes_one_item_per_request(triton: tuple[int, int]) -> None:
    http_port, grpc_port = triton
    remote = {"backend": "Remote", "url": f"grpc://127.0.0.1:{grpc_port}", "model": "single", "instance_num": 3}
    before = _statistics(http_port, "single")
    with ps.pipe(remote) as pipe:
        assert pipe.max() == 1  # Triton's max_batch_size 0: tensors without a batch dimension
        futures = [pipe.submit({"data": np.array([float(i)], np.float32)}) for i in range(9)]
        assert [float(f.result(30)["result"][0]) for f in futures] == [2.0 * i for i in range(9)]
    requests, inferences, _ = (a - b for a, b in zip(_statistics(http_port, "single"), before, strict=True))
    assert requests == inferences == 9
