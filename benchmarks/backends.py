"""Compute backends against the libraries called directly.

onnx     An ONNX MLP (2048 -> 8192 -> 2048 float32, built here) at saturation: pipeserve's Onnx
         backend (2 instances x 1 intra-op thread, batching window 10 ms, 64 clients) as a fraction
         of the ideal, onnxruntime called back to back at the best batch size and thread setting
         (2 sessions x 1 thread, or 1 session x 2 threads). And 1-client latency: the backend
         (1 instance, 2 threads) against session.run with the same settings.
process  A pure-Python CPU-bound backend (prime counting), 2 instances, 8 clients: processes
         (instance_type = "process") against threads.
images   S[DecodeMat,ResizeMat,cvtColorMat,Mat2Tensor] on the bundled JPEGs (benchmarks/data),
         2 instances, 8 clients, against the same OpenCV calls in a plain loop on 1 and 2 threads.

    python benchmarks/backends.py onnx --repeats 3
    python benchmarks/backends.py process --repeats 3
    python benchmarks/backends.py images --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, emit, machine, median_of, run_worker

BATCHES = (1, 2, 4, 8, 16, 32)
IMAGES = ROOT / "benchmarks" / "data"


def _mlp_model(folder: str) -> str:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((2048, 8192)) / 64).astype(np.float32)
    w2 = (rng.standard_normal((8192, 2048)) / 64).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2048])],
        initializer=[onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(Path(folder) / "mlp.onnx")
    onnx.save(model, path)
    return path


def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_worker(clients: int, seconds: float) -> dict[str, Any]:
    import numpy as np

    import pipeserve
    from pipeserve.bench import measure_ideal, percentile, run_closed_loop

    with tempfile.TemporaryDirectory() as folder:
        path = _mlp_model(folder)
        rows = np.random.default_rng(1).standard_normal((64, 2048)).astype(np.float32)
        settings = {}
        for sessions, threads in ((2, 1), (1, 2)):
            pool = [_session(path, threads) for _ in range(sessions)]
            local = threading.local()
            counter = iter(range(1000))

            def call(batch: int, pool: list[Any] = pool, local: Any = local, counter: Any = counter) -> None:
                if not hasattr(local, "session"):
                    local.session = pool[next(counter) % len(pool)]
                local.session.run(None, {"x": rows[:batch]})

            sizes = [b for b in BATCHES if b <= clients // sessions]
            rates = measure_ideal(call, threads=sessions, batch_sizes=sizes, seconds=1.0)
            best = max(rates, key=lambda b: rates[b])
            settings[(sessions, threads)] = (best, rates[best])
        (sessions, threads), (best, ideal) = max(settings.items(), key=lambda kv: kv[1][1])
        config = {
            "backend": "Onnx",
            "model": path,
            "instance_num": 2,
            "max": settings[(2, 1)][0],
            "batching_timeout": 10,
        }
        with pipeserve.pipe(config) as pipe:
            result = run_closed_loop(pipe, lambda i: {"data": rows[i % 64]}, clients=clients, seconds=seconds)
            batch = pipe.stats()["main"]["mean_batch_size"]
        # 1-client latency, paired: calls through the pipe alternate with session.run on the
        # backend's own session (1 instance x 2 threads), so drift hits both alike.
        with pipeserve.pipe({"backend": "Onnx", "model": path, "intra_op_threads": 2}) as pipe:
            session = pipe._nodes["main"].instances[0].backend.session  # white-box, for the pairing
            through, direct = [], []
            for _ in range(300):
                start = time.perf_counter()
                pipe({"data": rows[0]})
                through.append(time.perf_counter() - start)
                start = time.perf_counter()
                session.run(None, {"x": rows[:1]})
                direct.append(time.perf_counter() - start)
            through.sort()
            direct.sort()
    summary = result.summary()
    summary.update(
        ideal=ideal,
        ideal_setting=f"{sessions}x{threads} threads, batch {best}",
        fraction=result.throughput / ideal,
        mean_batch=batch,
        direct_p50_ms=1e3 * percentile(direct, 0.5),
        single_p50_ms=1e3 * percentile(through, 0.5),
        added_ms=1e3 * (percentile(through, 0.5) - percentile(direct, 0.5)),
    )
    return summary


def process_worker(clients: int, seconds: float) -> dict[str, Any]:
    import pipeserve
    from pipeserve.bench import run_closed_loop

    out: dict[str, Any] = {}
    for kind in ("thread", "process"):
        config = {"backend": "PrimesForProcessTest", "imports": "tests.proc_backends", "instance_num": 2}
        config["instance_type"] = kind
        with pipeserve.pipe(config) as pipe:
            result = run_closed_loop(pipe, lambda i: {"data": 3000}, clients=clients, seconds=seconds)
        out[kind] = result.throughput
        out[f"{kind}_p50_ms"] = result.summary()["p50_ms"]
    out["speedup"] = out["process"] / out["thread"]
    out["throughput"] = out["process"]
    return out


def images_worker(clients: int, seconds: float) -> dict[str, Any]:
    import cv2

    import pipeserve
    from pipeserve.bench import measure_ideal, run_closed_loop

    payloads = [p.read_bytes() for p in sorted(IMAGES.glob("*.jpg"))]

    def by_hand(data: bytes) -> Any:
        import numpy as np

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        image = cv2.cvtColor(cv2.resize(image, (224, 224)), cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(image.transpose(2, 0, 1).astype(np.float32))

    turn = iter(range(1 << 62))

    def one_image(batch: int) -> None:  # the plain loop's unit of work: one image
        by_hand(payloads[next(turn) % len(payloads)])

    rates = {
        threads: measure_ideal(one_image, threads=threads, batch_sizes=(1,), seconds=seconds)[1] for threads in (1, 2)
    }
    config = {
        "backend": "S[DecodeMat,ResizeMat,cvtColorMat,Mat2Tensor]",
        "resize_h": 224,
        "resize_w": 224,
        "color": "rgb",
        "instance_num": 2,
        "max": 4,
    }
    with pipeserve.pipe(config) as pipe:
        result = run_closed_loop(
            pipe, lambda i: {"data": payloads[i % len(payloads)]}, clients=clients, seconds=seconds
        )
    summary = result.summary()
    summary.update(loop_1_thread=rates[1], loop_2_threads=rates[2])
    return summary


WORKERS = {"onnx": (onnx_worker, 64), "process": (process_worker, 8), "images": (images_worker, 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(WORKERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    from pipeserve.bench import format_table

    _, clients = WORKERS[args.scenario]
    runs = []
    for repeat in range(args.repeats):
        result = run_worker(sys.executable, Path(__file__), [args.scenario, str(clients), str(args.seconds)])
        runs.append(result)
        print(f"repeat {repeat + 1}: {result}", file=sys.stderr)
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    merged = median_of(runs, keys)
    print(machine())
    print(format_table([{k: v for k, v in merged.items() if k not in ("label",)}]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        job, _ = WORKERS[sys.argv[2]]
        emit(job(int(sys.argv[3]), float(sys.argv[4])))
    else:
        main()
