"""Single-node scheduling: latency at low load, throughput at saturation.

low-load   A backend doing 1 ms of GIL-free work (``Sleep``), ``max=4``, ``batching_timeout=10``,
           one instance, 1/2/4/10 closed-loop clients: p50/p99 latency beside the work itself
           (``time.sleep(0.001)`` timed directly in the same process).
saturation A GIL-free numpy MLP whose per-item cost falls with batch size, two instances with one
           BLAS thread each, ``batching_timeout=10``, 64 clients: throughput as a fraction of the
           ideal, which is the same function called back to back by two threads at its best batch
           size among those 64 clients can fill on two instances (at most 32).

    python benchmarks/scheduler.py low-load --repeats 5
    python benchmarks/scheduler.py saturation --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, median_of, run_worker

BLAS_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def low_load_worker(clients: int, seconds: float) -> dict[str, Any]:
    import pipeserve
    from pipeserve.bench import percentile, run_closed_loop

    work = []
    for _ in range(300):
        start = time.perf_counter()
        time.sleep(0.001)
        work.append(time.perf_counter() - start)
    work.sort()
    with pipeserve.pipe({"backend": "Sleep", "sleep_ms": 1, "max": 4, "batching_timeout": 10}) as pipe:
        result = run_closed_loop(pipe, lambda i: {"data": i}, clients=clients, seconds=seconds, warmup=0.3)
        stats = pipe.stats()["main"]
    summary = result.summary()
    summary["work_p50_ms"] = 1e3 * percentile(work, 0.5)
    summary["mean_batch"] = stats["mean_batch_size"]
    summary["timeouts"] = stats["release_reasons"].get("timeout", 0)
    return summary


WIDTH, HIDDEN = 2048, 8192


class MLP:
    """relu(x @ W1) @ W2 on float32, 2048 -> 8192 -> 2048 (128 MB of weights): a large
    matmul-heavy model, memory-bound at batch 1 and compute-bound when batched; GIL-free in BLAS."""

    def __init__(self) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.np = np
        self.w1 = rng.standard_normal((WIDTH, HIDDEN), dtype=np.float32) / 64
        self.w2 = rng.standard_normal((HIDDEN, WIDTH), dtype=np.float32) / 64

    def __call__(self, x: Any) -> Any:
        hidden = x @ self.w1
        self.np.maximum(hidden, 0, out=hidden)
        return hidden @ self.w2


def _ideal(model: MLP, rows: Any, threads: int, seconds: float, largest: int) -> tuple[int, float, dict[int, float]]:
    """Best items/s of ``threads`` threads calling ``model`` back to back, over batch sizes up
    to ``largest`` (what the clients can keep in flight per thread)."""
    from pipeserve.bench import measure_ideal

    sizes = [b for b in BATCHES if b <= largest]
    rates = measure_ideal(lambda b: model(rows[:b]), threads=threads, batch_sizes=sizes, seconds=seconds)
    best = max(rates, key=lambda b: rates[b])
    return best, rates[best], rates


def saturation_worker(clients: int, seconds: float) -> dict[str, Any]:
    import numpy as np

    import pipeserve
    from pipeserve.bench import run_closed_loop

    model = MLP()
    rows = np.random.default_rng(1).standard_normal((64, WIDTH), dtype=np.float32)

    class MLPBackend(pipeserve.Backend):
        def forward(self, items: list[dict[str, Any]]) -> None:
            out = model(np.stack([item["data"] for item in items]))
            for item, row in zip(items, out, strict=True):
                item["result"] = row

    pipeserve.register_backend(MLPBackend, "BenchMLP", replace=True)
    instances = 2
    best, ideal, rates = _ideal(model, rows, threads=instances, seconds=min(seconds, 1.5), largest=clients // instances)
    config = {"backend": "BenchMLP", "instance_num": instances, "max": best, "batching_timeout": 10}
    with pipeserve.pipe(config) as pipe:
        result = run_closed_loop(pipe, lambda i: {"data": rows[i % 64]}, clients=clients, seconds=seconds, warmup=0.5)
        stats = pipe.stats()["main"]
    summary = result.summary()
    summary.update(
        best_batch=best,
        ideal=ideal,
        fraction=result.throughput / ideal,
        mean_batch=stats["mean_batch_size"],
        batch1_rate=rates[1],
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["low-load", "saturation"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from pipeserve.bench import format_table

    client_counts = [1, 2, 4, 10] if args.scenario == "low-load" else [64]
    env = BLAS_ONE_THREAD if args.scenario == "saturation" else None
    runs: dict[int, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for clients in client_counts:
            result = run_worker(sys.executable, Path(__file__), [args.scenario, str(clients), str(args.seconds)], env)
            runs.setdefault(clients, []).append(result)
            print(
                f"repeat {repeat + 1}: {clients} clients {result['throughput']:,.0f}/s p50 {result['p50_ms']} ms",
                file=sys.stderr,
            )
    rows = []
    for clients, results in runs.items():
        if args.scenario == "low-load":
            m = median_of(results, ["throughput", "p50_ms", "p99_ms", "work_p50_ms", "mean_batch", "timeouts"])
            rows.append(
                {
                    "clients": clients,
                    "req/s": m["throughput"],
                    "p50 ms": m["p50_ms"],
                    "p99 ms": m["p99_ms"],
                    "work p50 ms": m["work_p50_ms"],
                    "p50 - work ms": m["p50_ms"] - m["work_p50_ms"],
                    "mean batch": m["mean_batch"],
                    "windows waited out": m["timeouts"],
                }
            )
        else:
            m = median_of(results, ["throughput", "ideal", "fraction", "p50_ms", "p99_ms", "mean_batch"])
            rows.append(
                {
                    "clients": clients,
                    "best batch": m["best_batch"],
                    "ideal items/s": m["ideal"],
                    "pipeserve items/s": m["throughput"],
                    "fraction of ideal": m["fraction"],
                    "mean batch": m["mean_batch"],
                    "p50 ms": m["p50_ms"],
                    "p99 ms": m["p99_ms"],
                }
            )
    print(machine())
    print(format_table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        job = low_load_worker if sys.argv[2] == "low-load" else saturation_worker
        emit(job(int(sys.argv[3]), float(sys.argv[4])))
    else:
        main()
