"""Multi-node pipes: stage overlap, the cost of a hop, cross-request batching of sub-requests.

overlap    three nodes in a chain, each 5 ms of GIL-free work (Sleep) with one instance,
           16 clients: throughput as a fraction of the bottleneck stage's limit (200 items/s).
hops       a chain of 5 Identity nodes vs a single one, 1 and 8 clients: req/s, p50, and the
           cost of one hop = (p50 of the chain - p50 of one node) / 4; beside TorchPipe's C++
           core (omniback) running the same graph.
mapreduce  a MapReduce fanning each request into 20 sub-items onto a node with max=32 (a 2 ms
           + 0.05 ms/item Sleep), 1 and 8 clients: mean batch size and requests/s.

    python benchmarks/graph.py overlap --repeats 5
    python benchmarks/graph.py hops --repeats 5
    python benchmarks/graph.py mapreduce --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEER_PYTHON, emit, machine, median_of, run_worker


def chain(length: int, **params: Any) -> dict[str, Any]:
    nodes = {}
    for index in range(length):
        node: dict[str, Any] = {"backend": "Identity", "instance_num": 2, **params}
        if index + 1 < length:
            node["next"] = f"n{index + 1}"
        nodes[f"n{index}"] = node
    return nodes


def make_pipe(system: str, config: dict[str, Any]) -> Any:
    if system == "omniback":
        import omniback

        return omniback.pipe({name: {k: str(v) for k, v in node.items()} for name, node in config.items()})
    import pipeserve

    return pipeserve.pipe(config)


def worker(scenario: str, system: str, clients: int, seconds: float, length: int) -> dict[str, Any]:
    from pipeserve.bench import run_closed_loop

    if scenario == "overlap":
        config = {
            "a": {"backend": "Sleep", "sleep_ms": 5, "next": "b"},
            "b": {"backend": "Sleep", "sleep_ms": 5, "next": "c"},
            "c": {"backend": "Sleep", "sleep_ms": 5},
        }
        make_item = lambda i: {"data": i}  # noqa: E731
    elif scenario == "hops":
        config = chain(length)
        make_item = lambda i: {"data": i}  # noqa: E731
    else:
        config = {
            "split": {"backend": "Identity", "next": "each"},
            "each": {"backend": "MapReduce", "jump": "work", "split": "data", "merge": "result"},
            "work": {"backend": "Sleep", "sleep_ms": 2, "per_item_ms": 0.05, "max": 32},
        }
        make_item = lambda i: {"data": list(range(20))}  # noqa: E731
    pipe = make_pipe(system, config)
    pipe(make_item(0))
    result = run_closed_loop(pipe, make_item, clients=clients, seconds=seconds, warmup=0.5)
    summary = {"system": system, "length": length, **result.summary(), "throughput": result.throughput}  # unrounded
    if system != "omniback":
        stats = pipe.stats()
        node = "work" if scenario == "mapreduce" else next(iter(stats))
        summary["mean_batch"] = stats[node]["mean_batch_size"]
        pipe.close()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["overlap", "hops", "mapreduce"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--peer-python", default=str(PEER_PYTHON))
    args = parser.parse_args()
    from pipeserve.bench import format_table

    if args.scenario == "overlap":
        cases = [("pipeserve", 16, 3)]
    elif args.scenario == "hops":
        systems = ["pipeserve"] + (["omniback"] if Path(args.peer_python).exists() else [])
        cases = [(s, c, n) for c in (1, 8) for n in (1, 5) for s in systems]
    else:
        cases = [("pipeserve", 1, 1), ("pipeserve", 8, 1)]
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for system, clients, length in cases:
            python = args.peer_python if system == "omniback" else sys.executable
            params = [args.scenario, system, str(clients), str(args.seconds), str(length)]
            result = run_worker(python, Path(__file__), params)
            runs.setdefault((system, clients, length), []).append(result)
            print(
                f"repeat {repeat + 1}: {system} {clients} clients len {length}: {result['throughput']:,.0f}/s",
                file=sys.stderr,
            )
    rows = []
    medians = {
        key: median_of(value, ["throughput", "p50_ms", "p99_ms", *(["mean_batch"] if key[0] != "omniback" else [])])
        for key, value in runs.items()
    }
    for (system, clients, length), m in medians.items():
        row: dict[str, Any] = {"system": system, "clients": clients}
        if args.scenario == "overlap":
            row.update({"items/s": m["throughput"], "bottleneck limit": 200, "fraction": m["throughput"] / 200})
        elif args.scenario == "hops":
            single = medians[(system, clients, 1)]
            row.update({"nodes": length, "req/s": m["throughput"]})
            if length > 1:
                row["per hop us"] = 1e3 * (m["p50_ms"] - single["p50_ms"]) / (length - 1)
        else:
            row.update(
                {"req/s": m["throughput"], "sub-items/s": 20 * m["throughput"], "mean batch": m.get("mean_batch")}
            )
        row.update({"p50 ms": m["p50_ms"], "p99 ms": m["p99_ms"]})
        rows.append(row)
    print(machine())
    print(format_table(rows, list(dict.fromkeys(k for r in rows for k in r))))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        emit(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])))
    else:
        main()
