"""Overhead of the call: a no-op Identity node under 1, 8 and 64 closed-loop caller threads.

Peers, measured in the same run: TorchPipe's C++ core (``omniback.pipe({"backend": "Identity",
"instance_num": "2"})``, the same call shape) and a plain ``ThreadPoolExecutor(2).submit().result()``
round trip. Each figure is the median of ``--repeats`` fresh-process runs.

    python benchmarks/overhead.py --repeats 5 --seconds 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEER_PYTHON, emit, machine, median_of, run_worker

SYSTEMS = ("pipeserve", "pipeserve-no-inline", "omniback", "threadpool")


def make_call(system: str) -> Any:
    if system.startswith("pipeserve"):
        import pipeserve

        pipe = pipeserve.pipe({"backend": "Identity", "instance_num": 2, "inline": system == "pipeserve"})
        return pipe
    if system == "omniback":
        import omniback

        return omniback.pipe({"backend": "Identity", "instance_num": "2"})
    if system == "threadpool":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(2)

        def identity(item: dict[str, Any]) -> None:
            item["result"] = item["data"]

        return lambda item: pool.submit(identity, item).result()
    raise ValueError(system)


def worker(system: str, threads: int, seconds: float) -> None:
    from pipeserve.bench import run_closed_loop

    call = make_call(system)
    call({"data": 0})
    result = run_closed_loop(call, lambda i: {"data": i}, clients=threads, seconds=seconds, warmup=0.5)
    emit({"system": system, "threads": threads, **result.summary(), "throughput": result.throughput})  # unrounded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", default="1,8,64")
    parser.add_argument("--peer-python", default=str(PEER_PYTHON))
    args = parser.parse_args()
    from pipeserve.bench import format_table

    systems = [s for s in SYSTEMS if s != "omniback" or Path(args.peer_python).exists()]
    if "omniback" not in systems:
        print("omniback not installed (run benchmarks/peers.sh); measuring without it", file=sys.stderr)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for threads in map(int, args.threads.split(",")):
            for system in systems:
                python = args.peer_python if system == "omniback" else sys.executable
                result = run_worker(python, Path(__file__), [system, str(threads), str(args.seconds)])
                runs.setdefault((system, threads), []).append(result)
                print(
                    f"repeat {repeat + 1}: {system:>20} {threads:>3} threads {result['throughput']:>10,.0f} req/s",
                    file=sys.stderr,
                )
    rows = []
    for (system, threads), results in sorted(runs.items(), key=lambda kv: (kv[0][1], SYSTEMS.index(kv[0][0]))):
        merged = median_of(results, ["throughput", "p50_ms", "p99_ms"])
        base = (
            median_of(runs[("omniback", threads)], ["throughput"])["throughput"]
            if ("omniback", threads) in runs
            else None
        )
        rows.append(
            {
                "system": system,
                "threads": threads,
                "req/s": merged["throughput"],
                "p50 ms": merged["p50_ms"],
                "p99 ms": merged["p99_ms"],
                "vs omniback": f"{merged['throughput'] / base:.2f}x" if base else "-",
            }
        )
    print(machine())
    print(format_table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
