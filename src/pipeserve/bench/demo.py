"""The main job until the OCR service lands: pipeserve's scheduler on its built-in backends.

Three short scenarios, each printed as results and a latency/throughput table:

1. call overhead: a no-op ``Identity`` node called from 1 and 8 threads, beside a plain
   ``ThreadPoolExecutor`` round trip;
2. low load: 1 ms of GIL-free work (``Sleep``), ``max=4``, ``batching_timeout=10``, 1-10 clients;
3. batching at saturation: a large numpy MLP (needs numpy), 64 clients, beside the ideal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import pipeserve

from .loadgen import format_table, measure_ideal, run_closed_loop


def _row(system: str, result: Any, **extra: Any) -> dict[str, Any]:
    summary = result.summary()
    return {
        "system": system,
        "clients": summary["clients"],
        "req/s": summary["throughput"],
        "p50 ms": summary["p50_ms"],
        "p90 ms": summary["p90_ms"],
        "p99 ms": summary["p99_ms"],
        **extra,
    }


def overhead(seconds: float, out: TextIO) -> list[dict[str, Any]]:
    rows = []
    pool = ThreadPoolExecutor(2)

    def identity(item: dict[str, Any]) -> None:
        item["result"] = item["data"]

    with pipeserve.pipe({"backend": "Identity", "instance_num": 2}) as pipe:
        sample = pipe({"data": "hello"})
        out.write(f"  Identity node: pipe({{'data': 'hello'}}) -> result {sample['result']!r}\n")
        for clients in (1, 8):
            result = run_closed_loop(pipe, lambda i: {"data": i}, clients=clients, seconds=seconds, progress=out)
            rows.append(_row("pipeserve Identity", result))
            peer: Callable[[dict[str, Any]], Any] = lambda item: pool.submit(identity, item).result()  # noqa: E731
            result = run_closed_loop(peer, lambda i: {"data": i}, clients=clients, seconds=seconds, progress=out)
            rows.append(_row("ThreadPoolExecutor", result))
    pool.shutdown()
    return rows


def low_load(seconds: float, out: TextIO) -> list[dict[str, Any]]:
    rows = []
    config = {"backend": "Sleep", "sleep_ms": 1, "max": 4, "batching_timeout": 10}
    for clients in (1, 2, 4, 10):
        with pipeserve.pipe(config) as pipe:
            result = run_closed_loop(pipe, lambda i: {"data": i}, clients=clients, seconds=seconds, progress=out)
            stats = pipe.stats()["main"]
        rows.append(
            _row(
                "Sleep 1 ms, max=4",
                result,
                **{
                    "mean batch": stats["mean_batch_size"],
                    "windows waited out": stats["release_reasons"].get("timeout", 0),
                },
            )
        )
    return rows


def saturation(seconds: float, out: TextIO) -> list[dict[str, Any]]:
    if "numpy" not in sys.modules:
        # One BLAS thread per instance: two instances share the two cores without oversubscribing.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
    try:
        import numpy as np
    except ImportError:
        out.write("  (numpy is not installed: skipping the batching scenario)\n")
        return []
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((1024, 4096), dtype=np.float32) / 32
    w2 = rng.standard_normal((4096, 1024), dtype=np.float32) / 64
    rows_in = rng.standard_normal((64, 1024), dtype=np.float32)

    def mlp(x: Any) -> Any:
        return np.maximum(x @ w1, 0) @ w2

    def forward(items: list[dict[str, Any]]) -> list[Any]:
        return list(mlp(np.stack([item["data"] for item in items])))

    pipeserve.register_backend(forward, "DemoMLP", replace=True)
    rates = measure_ideal(lambda b: mlp(rows_in[:b]), threads=2, batch_sizes=(1, 32), seconds=1.0)
    config = {"backend": "DemoMLP", "instance_num": 2, "max": 32, "batching_timeout": 10}
    with pipeserve.pipe(config) as pipe:
        result = run_closed_loop(pipe, lambda i: {"data": rows_in[i % 64]}, clients=64, seconds=seconds, progress=out)
        stats = pipe.stats()["main"]
    out.write(
        f"  the MLP called directly by 2 threads: {rates[1]:,.0f} items/s at batch 1, {rates[32]:,.0f} at batch 32"
        f" (the ideal); through pipeserve: {result.throughput:,.0f} items/s = {result.throughput / rates[32]:.0%}"
        " of the ideal\n"
    )
    return [_row("MLP 1024-4096-1024", result, **{"mean batch": stats["mean_batch_size"]})]


def main(seconds: float = 2.0, out: TextIO = sys.stdout) -> None:
    """Run the three scenarios and print their tables."""
    out.write(f"pipeserve {pipeserve.__version__}: scheduler demo on built-in backends\n\n")
    for title, scenario in (
        ("1. Call overhead (no-op node, closed-loop callers)", overhead),
        ("2. Low load: 1 ms of GIL-free work, max=4, batching_timeout=10 ms", low_load),
        ("3. Batching at saturation: a numpy MLP, 64 clients", saturation),
    ):
        out.write(f"{title}\n")
        rows = scenario(seconds, out)
        if rows:
            out.write(format_table(rows) + "\n\n")
