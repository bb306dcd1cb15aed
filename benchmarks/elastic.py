"""The measurements behind the elastic CPU budget and the OCR configuration (issue 12).

Each part runs in fresh worker processes (ONNX Runtime's global thread pool must be set up before
the first session of a process), on the PP-OCRv4 models that rapidocr-onnxruntime ships, with
random inputs of the shapes the pipeline feeds them:

  mechanisms  det (1x3x960x736): a call alone and two concurrent callers, for one-thread sessions,
              two-thread sessions, one global thread pool, and the elastic choice (two threads
              alone, one each under load)
  threads     seconds per call with 1 and all cores, per model (does a second thread pay?)
  scaling     two one-thread sessions at once against one alone (what two cores give)
  rec-batch   the recogniser's milliseconds per line by batch size and line width
  torch       PyTorch (a small convolutional model, 1x3x480x480): whether torch.set_num_threads
              from one thread changes every thread's, and a call with 1 and all cores
  pipeline    the OCR pipe at one client, elastic sessions against elastic = false, rounds
              interleaved, on held-out document pages

    python benchmarks/elastic.py [--parts mechanisms,threads,scaling,rec-batch,pipeline] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import document_pages, emit, machine, run_worker
from pipeserve.budget import machine_cores

PARTS = ("mechanisms", "threads", "scaling", "rec-batch", "torch", "pipeline")
MODELS = {
    "det": ("ch_PP-OCRv4_det_infer.onnx", (1, 3, 960, 736)),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (32, 3, 48, 192)),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 960)),
}


def _session(model: str, threads: int, shared_pool: bool = False) -> Any:
    import onnxruntime as ort

    from pipeserve.examples.ocr import models_folder

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if shared_pool:
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(models_folder() / MODELS[model][0]), options, providers=["CPUExecutionProvider"])


def _input(model: str, shape: tuple[int, ...] | None = None) -> Any:
    import numpy as np

    return np.random.default_rng(0).random(shape or MODELS[model][1], dtype=np.float32)


def _alone(session: Any, x: Any, calls: int) -> float:
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _together(sessions: list[Any], x: Any, calls: int) -> float:
    """Calls per second of ``sessions`` called back to back, each from its own thread."""
    name = sessions[0].get_inputs()[0].name

    def loop(session: Any) -> None:
        for _ in range(calls):
            session.run(None, {name: x})

    threads = [threading.Thread(target=loop, args=(s,)) for s in sessions]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(sessions) * calls / (time.perf_counter() - start)


def mechanism_worker(kind: str) -> dict[str, Any]:
    cores = machine_cores()
    x = _input("det")
    if kind == "global-pool":
        import onnxruntime.capi._pybind_state as state

        state.set_global_thread_pool_sizes(cores, 1)
        sessions = [_session("det", 0, shared_pool=True) for _ in range(2)]
        return {"alone_s": _alone(sessions[0], x, 6), "pair_calls_s": _together(sessions, x, 6)}
    if kind == "elastic":  # two threads alone, one each under load: the budget's grants
        wide, narrow = _session("det", cores), [_session("det", 1) for _ in range(2)]
        return {"alone_s": _alone(wide, x, 6), "pair_calls_s": _together(narrow, x, 6)}
    threads = 1 if kind == "one-thread" else cores
    sessions = [_session("det", threads) for _ in range(2)]
    return {"alone_s": _alone(sessions[0], x, 6), "pair_calls_s": _together(sessions, x, 6)}


def threads_worker(model: str) -> dict[str, Any]:
    x = _input(model)
    one = _alone(_session(model, 1), x, 8)
    every = _alone(_session(model, machine_cores()), x, 8)
    return {"one_s": one, "all_s": every, "speedup": one / every}


def scaling_worker(model: str) -> dict[str, Any]:
    x = _input(model)
    sessions = [_session(model, 1) for _ in range(2)]
    calls = 20 if model == "rec" else 6
    alone = 1 / _alone(sessions[0], x, calls)
    both = _together(sessions, x, calls)
    return {"alone_calls_s": alone, "two_calls_s": both, "scaling": both / alone}


def rec_batch_worker() -> dict[str, Any]:
    session = _session("rec", 1)
    rows = {}
    for width in (320, 960, 1600):
        for batch in (1, 4, 8, 16):
            x = _input("rec", (batch, 3, 48, width))
            rows[f"{width}x{batch}"] = 1e3 * _alone(session, x, 3) / batch
    return rows


def torch_worker() -> dict[str, Any]:
    import torch

    cores = machine_cores()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1)
    ).eval()
    x = torch.rand(1, 3, 480, 480)

    def call_s(threads: int) -> float:
        torch.set_num_threads(threads)
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(8):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    torch.set_num_threads(cores)
    other = threading.Thread(target=torch.set_num_threads, args=(1,))
    other.start()
    other.join()
    seen_here = torch.get_num_threads()  # after another thread set 1
    one, every = call_s(1), call_s(cores)
    return {"process_wide": seen_here == 1, "one_s": one, "all_s": every, "speedup": one / every}


def pipeline_worker(elastic: str) -> dict[str, Any]:
    from pipeserve.examples import ocr

    pages = document_pages(4)
    off = {f"{node}.elastic": False for node in ("det", "cls", "rec")}
    with ocr.pipeline(**({} if elastic == "on" else off)) as pipe:
        pipe({"data": pages[0]})
        start = time.perf_counter()
        for page in pages:
            pipe({"data": page})
        seconds = time.perf_counter() - start
        stats = pipe.stats()
        budget = pipe.budget.statistics()
    return {
        "images_s": len(pages) / seconds,
        "det_ms": stats["det"]["mean_compute_ms"],
        "rec_ms": stats["rec"]["mean_compute_ms"],
        "widened": budget.widened,
        "grants": budget.grants,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from pipeserve.bench import format_table

    here = Path(__file__)
    parts = args.parts.split(",")
    print(machine())
    if "mechanisms" in parts:
        kinds = ("one-thread", "two-thread", "global-pool", "elastic")
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                runs[kind].append(run_worker(sys.executable, here, ["mechanism", kind]))
        print("det (1x3x960x736): a call alone, and two concurrent callers")
        print(
            format_table(
                [
                    {
                        "sessions": kind,
                        "alone s/call": statistics.median(r["alone_s"] for r in runs[kind]),
                        "two callers calls/s": statistics.median(r["pair_calls_s"] for r in runs[kind]),
                    }
                    for kind in kinds
                ]
            )
        )
    if "threads" in parts:
        rows = []
        for model in MODELS:
            results = [run_worker(sys.executable, here, ["threads", model]) for _ in range(args.rounds)]
            rows.append(
                {
                    "model": model,
                    "input": "x".join(map(str, MODELS[model][1])),
                    "1 thread ms": 1e3 * statistics.median(r["one_s"] for r in results),
                    "all cores ms": 1e3 * statistics.median(r["all_s"] for r in results),
                    "speedup": statistics.median(r["speedup"] for r in results),
                }
            )
        print("a call with one thread and with all cores")
        print(format_table(rows))
    if "scaling" in parts:
        rows = []
        for model in ("det", "rec"):
            results = [run_worker(sys.executable, here, ["scaling", model]) for _ in range(args.rounds)]
            rows.append(
                {"model": model, "two one-thread sessions at once": statistics.median(r["scaling"] for r in results)}
            )
        print("what two cores give: calls/s of two concurrent one-thread sessions over one alone (2.0 is perfect)")
        print(format_table(rows))
    if "rec-batch" in parts:
        results = [run_worker(sys.executable, here, ["rec-batch"]) for _ in range(args.rounds)]
        rows = []
        for width in (320, 960, 1600):
            row: dict[str, Any] = {"line width": width}
            for batch in (1, 4, 8, 16):
                row[f"batch {batch} ms/line"] = statistics.median(r[f"{width}x{batch}"] for r in results)
            rows.append(row)
        print("the recogniser, one thread: milliseconds per line")
        print(format_table(rows))
    if "torch" in parts:
        results = [run_worker(sys.executable, here, ["torch"]) for _ in range(args.rounds)]
        wide = all(r["process_wide"] for r in results)
        print(f"PyTorch: set_num_threads from another thread changed this thread's count: {wide}")
        row = {
            "1 thread ms": 1e3 * statistics.median(r["one_s"] for r in results),
            "all cores ms": 1e3 * statistics.median(r["all_s"] for r in results),
            "speedup": statistics.median(r["speedup"] for r in results),
        }
        print(format_table([row]))
    if "pipeline" in parts:
        runs = {"on": [], "off": []}
        for _ in range(args.rounds):
            for elastic in ("on", "off"):
                runs[elastic].append(run_worker(sys.executable, here, ["pipeline", elastic]))
        rows = []
        for elastic, results in runs.items():
            rows.append(
                {
                    "elastic": elastic,
                    "images/s": statistics.median(r["images_s"] for r in results),
                    "det ms": statistics.median(r["det_ms"] for r in results),
                    "rec ms": statistics.median(r["rec_ms"] for r in results),
                    "widened grants": statistics.median(r["widened"] for r in results),
                    "grants": statistics.median(r["grants"] for r in results),
                }
            )
        ratio = rows[0]["images/s"] / rows[1]["images/s"]
        print(f"the OCR pipe at one client, 4 held-out pages, {args.rounds} interleaved rounds: on/off {ratio:.2f}")
        print(format_table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        part, rest = sys.argv[2], sys.argv[3:]
        if part == "mechanism":
            emit(mechanism_worker(rest[0]))
        elif part == "threads":
            emit(threads_worker(rest[0]))
        elif part == "scaling":
            emit(scaling_worker(rest[0]))
        elif part == "rec-batch":
            emit(rec_batch_worker())
        elif part == "torch":
            emit(torch_worker())
        else:
            emit(pipeline_worker(rest[0]))
    else:
        main()
