"""The OCR service against RapidOCR, the library that ships the models, on the bundled pages.

Systems, 1/4/16 closed-loop client threads:
  pipeserve           the pipeline (pipeserve.examples.ocr), one pipe shared by all clients
  rapidocr-shared     one RapidOCR engine shared by all threads (onnxruntime's default threads)
  rapidocr-per-thread one engine per thread, each with cores / threads intra-op threads
The ideal: the sum over stages of per-item compute at the best batch size, measured directly
with single-thread sessions (det per page, cls and rec per line), spread over the cores.

    python benchmarks/ocr.py --repeats 3 --seconds 8 [--plot docs/ocr_throughput.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, median_of, ocr_pages, run_worker

SYSTEMS = ("pipeserve", "rapidocr-shared", "rapidocr-per-thread")


def worker(system: str, clients: int, seconds: float) -> dict[str, Any]:
    from pipeserve.bench import run_closed_loop

    pages = ocr_pages()
    cores = os.cpu_count() or 1
    if system == "pipeserve":
        from pipeserve.examples import ocr

        pipe = ocr.pipeline()
        call: Any = pipe
    else:
        from rapidocr_onnxruntime import RapidOCR

        if system == "rapidocr-shared":
            engine = RapidOCR()
            call = lambda item: engine(item["data"])  # noqa: E731
        else:
            threads = max(1, cores // clients)
            local = threading.local()

            def call(item: dict[str, Any]) -> Any:
                if not hasattr(local, "engine"):
                    local.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
                return local.engine(item["data"])

    result = run_closed_loop(
        call, lambda i: {"data": pages[i % len(pages)]}, clients=clients, seconds=seconds, warmup=3.0
    )
    if system == "pipeserve":
        pipe.close()
    return {"system": system, **result.summary()}


def ideal_worker() -> dict[str, Any]:
    """CPU seconds per page, stage by stage, with single-thread sessions at their best batch."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    pages = [engine.load_img(p) for p in ocr_pages()]
    det = 0.0
    lines: list[Any] = []
    for page in pages:
        image, _, _ = engine.preprocess(page)
        image, _ = engine.maybe_add_letterbox(image, {})
        start = time.perf_counter()
        boxes, _ = engine.auto_text_det(image)
        det += time.perf_counter() - start
        lines += engine.get_crop_img_list(image, boxes)
    cls = rec = float("inf")
    rotated = lines
    for batch in (1, 6, 16, 32):  # each stage at its best batch size
        engine.text_cls.cls_batch_num = engine.text_rec.rec_batch_num = batch
        start = time.perf_counter()
        rotated, _, _ = engine.text_cls(lines)
        cls = min(cls, time.perf_counter() - start)
        start = time.perf_counter()
        engine.text_rec(rotated)
        rec = min(rec, time.perf_counter() - start)
    per_page = (det + cls + rec) / len(pages)
    cores = os.cpu_count() or 1
    return {
        "det_s": det / len(pages),
        "cls_s": cls / len(pages),
        "rec_s": rec / len(pages),
        "lines_per_page": len(lines) / len(pages),
        "ideal": cores / per_page,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--plot", help="write a PNG plot of throughput and p99 against clients")
    args = parser.parse_args()
    from pipeserve.bench import format_table

    clients = [int(c) for c in args.clients.split(",")]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    ideals = []
    for repeat in range(args.repeats):
        ideals.append(run_worker(sys.executable, Path(__file__), ["ideal"]))
        for count in clients:
            for system in SYSTEMS:
                result = run_worker(sys.executable, Path(__file__), [system, str(count), str(args.seconds)])
                runs.setdefault((system, count), []).append(result)
                print(f"repeat {repeat + 1}: {system} {count} clients {result['throughput']:.2f}/s", file=sys.stderr)
    ideal = median_of(ideals, ["det_s", "cls_s", "rec_s", "lines_per_page", "ideal"])
    rows = []
    medians = {key: median_of(value, ["throughput", "p50_ms", "p99_ms"]) for key, value in runs.items()}
    for count in clients:
        best = max((medians[(s, count)]["throughput"], s) for s in SYSTEMS if s != "pipeserve")
        for system in SYSTEMS:
            m = medians[(system, count)]
            rows.append(
                {
                    "clients": count,
                    "system": system,
                    "images/s": m["throughput"],
                    "p50 ms": m["p50_ms"],
                    "p99 ms": m["p99_ms"],
                    "vs best RapidOCR": f"{m['throughput'] / best[0]:.2f}x",
                    "of ideal": f"{m['throughput'] / ideal['ideal']:.0%}",
                }
            )
    print(machine())
    print(format_table([ideal]))
    print(format_table(rows))
    if args.plot:
        _plot(args.plot, clients, medians, ideal["ideal"])


def _plot(path: str, clients: list[int], medians: dict[tuple[str, int], dict[str, Any]], ideal: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for system in SYSTEMS:
        left.plot(clients, [medians[(system, c)]["throughput"] for c in clients], marker="o", label=system)
        right.plot(clients, [medians[(system, c)]["p99_ms"] for c in clients], marker="o", label=system)
    left.axhline(ideal, linestyle="--", color="grey", label="ideal")
    left.set(xlabel="clients", ylabel="images/s", title="Throughput", xscale="log", xticks=clients)
    right.set(xlabel="clients", ylabel="p99 latency (ms)", title="p99 latency", xscale="log", xticks=clients)
    for axis in (left, right):
        axis.set_xticklabels([str(c) for c in clients])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        if sys.argv[2] == "ideal":
            emit(ideal_worker())
        else:
            emit(worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        main()
