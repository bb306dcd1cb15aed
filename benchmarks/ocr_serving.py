"""The server's own cost on a real pipeline: the OCR service over HTTP against the same pipe in
process, on the bundled pages.

Systems, closed-loop client threads (default 4 and 16):
  in-process   ``pipeserve.examples.ocr.pipeline()`` called by the client threads
  http         ``pipeserve serve ocr`` in its own process, driven by the same load generator over
               HTTP (``pipeserve bench --url``'s client: one keep-alive connection per thread,
               the JPEG as a binary BYTES tensor)
Each figure comes from a fresh process (a fresh server too), the systems interleaved within each
round; medians of the rounds. Target (issue 9): HTTP >= 95% of in-process throughput, p99 within 5%.

    python benchmarks/ocr_serving.py --rounds 3 --seconds 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, median_of, ocr_pages, run_worker
from triton_ocr import WARMUP_S, load_worker

SYSTEMS = ("in-process", "http")


def worker(system: str, clients: int, seconds: float) -> dict[str, Any]:
    if system == "http":
        # A fresh `pipeserve serve ocr` process and the same generator over HTTP: what the
        # comparison with Triton measures for pipeserve (benchmarks/triton_ocr.py).
        result = load_worker("pipeserve", clients, seconds, Path(), engine_instances=1)
        return {
            "system": system,
            "throughput": result["images_s"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
        }
    from pipeserve.bench import run_closed_loop
    from pipeserve.examples import ocr

    pages = ocr_pages()
    with ocr.pipeline() as pipe:
        result = run_closed_loop(
            pipe, lambda i: {"data": pages[i % len(pages)]}, clients=clients, seconds=seconds, warmup=WARMUP_S
        )
    return {"system": system, "throughput": result.throughput, **{k: result.summary()[k] for k in ("p50_ms", "p99_ms")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", default="4,16")
    args = parser.parse_args()
    from pipeserve.bench import format_table

    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for clients in map(int, args.clients.split(",")):
            order = SYSTEMS if round_ % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                result = run_worker(sys.executable, Path(__file__), [system, str(clients), str(args.seconds)])
                runs.setdefault((system, clients), []).append(result)
                print(
                    f"round {round_ + 1}: {system:>10} {clients:>2} clients {result['throughput']:.2f} img/s "
                    f"p99 {result['p99_ms']:.0f} ms",
                    file=sys.stderr,
                )
    rows = []
    for clients in map(int, args.clients.split(",")):
        local = median_of(runs[("in-process", clients)], ["throughput", "p50_ms", "p99_ms"])
        remote = median_of(runs[("http", clients)], ["throughput", "p50_ms", "p99_ms"])
        rows.append(
            {
                "clients": clients,
                "in-process img/s": local["throughput"],
                "http img/s": remote["throughput"],
                "http / in-process": f"{remote['throughput'] / local['throughput']:.3f}",
                "p99 in-process ms": local["p99_ms"],
                "p99 http ms": remote["p99_ms"],
                "p99 ratio": f"{remote['p99_ms'] / local['p99_ms']:.3f}",
            }
        )
    print(machine())
    print(format_table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        emit(worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        main()
