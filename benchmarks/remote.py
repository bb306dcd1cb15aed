"""A remote node's cost and its batching across the wire (issue 11's benchmarks).

``hop``: what a remote hop adds. A no-op model (``Identity``, FP32 [1]) called in process, against
the same model behind ``pipeserve serve`` (a separate process on 127.0.0.1) called through a
``Remote`` node (HTTP and gRPC); closed-loop clients (1 and 8) in a fresh process per point,
interleaved over rounds; the median latency and the latency the hop adds.

``batching``: 64 closed-loop clients through a ``Remote`` node to a peer model that costs 5 ms per
request plus 0.1 ms per item (``Sleep``, one instance, ``max_batch_size`` 32, the peer batching
across requests with a 2 ms window):

- ``batched``: the Remote node with its batch ``max`` read from the peer (32), 2 instances (requests
  in flight: one running on the peer, one queued there) and a 4 ms batching window, so that a
  batch waits to fill while the peer is busy anyway;
- ``per-item``: one request per item (``max = 1``, 64 instances: what a hand-written backend
  calling the peer per item, from 64 threads, does);
- the ideal: full batches of 32 back to back on the peer's one instance, 32 / (5 + 3.2 ms).

    .venv/bin/python benchmarks/remote.py hop --rounds 5 --seconds 5
    .venv/bin/python benchmarks/remote.py batching --rounds 5 --seconds 8

Results: ``benchmarks/results/remote_{hop,batching}.{txt,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, emit, machine
from serving import free_ports

RESULTS = ROOT / "benchmarks" / "results"
SIGNATURE = (
    'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
    'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'
)
PEER_MODELS = {
    "noop": f'[main]\nbackend = "Identity"\nmax = 64\nmax_batch_size = 64\ninstance_num = 1\n{SIGNATURE}',
    "costly": (
        '[main]\nbackend = "Sleep"\nsleep_ms = 5\nper_item_ms = 0.1\nmax = 32\nmax_batch_size = 32\n'
        f"batching_timeout = 2\ninstance_num = 1\n{SIGNATURE}"
    ),
}
IDEAL_ITEMS_S = 32 / (0.005 + 32 * 0.0001)


@contextlib.contextmanager
def peer(folder: Path) -> Iterator[tuple[int, int]]:
    """``pipeserve serve`` on the peer models, in its own process; yields (http, grpc) ports."""
    for name, text in PEER_MODELS.items():
        (folder / f"{name}.toml").write_text(text)
    http_port, grpc_port = free_ports(2)
    argv = [sys.executable, "-m", "pipeserve", "serve", str(folder), "--port", str(http_port)]
    argv += ["--grpc-port", str(grpc_port), "--no-metrics"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the peer did not start") from None
                time.sleep(0.2)
        yield http_port, grpc_port
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def config_of(variant: str, http_port: int, grpc_port: int) -> dict[str, Any]:
    """The pipe of one variant."""
    if variant == "local":
        return {"backend": "Identity", "max": 64}
    if variant in ("remote-http", "remote-grpc"):
        url = f"http://127.0.0.1:{http_port}" if variant == "remote-http" else f"grpc://127.0.0.1:{grpc_port}"
        return {"backend": "Remote", "url": url, "model": "noop", "instance_num": 4}
    url = f"grpc://127.0.0.1:{grpc_port}"
    if variant == "batched":
        return {"backend": "Remote", "url": url, "model": "costly", "instance_num": 2, "batching_timeout": 4}
    if variant == "per-item":
        return {"backend": "Remote", "url": url, "model": "costly", "instance_num": 64, "max": 1}
    raise ValueError(variant)


def worker(variant: str, clients: int, seconds: float, http_port: int, grpc_port: int) -> dict[str, Any]:
    """One point in this (fresh) process."""
    import numpy as np

    import pipeserve as ps
    from pipeserve.bench import run_closed_loop

    with ps.pipe(config_of(variant, http_port, grpc_port)) as pipe:
        result = run_closed_loop(
            pipe, lambda i: {"data": np.array([float(i)], np.float32)}, clients=clients, seconds=seconds, warmup=1.0
        )
        stats = pipe.stats()["main"]
    summary = result.summary()
    return {
        "variant": variant,
        "clients": clients,
        "throughput": result.throughput,
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "errors": summary["errors"],
        "mean_batch": stats["mean_batch_size"],
    }


def run_point(variant: str, clients: int, seconds: float, ports: tuple[int, int]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    argv = [sys.executable, __file__, "worker", variant, str(clients), str(seconds), str(ports[0]), str(ports[1])]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        variant, clients, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        emit(worker(variant, clients, seconds, int(sys.argv[5]), int(sys.argv[6])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("hop", "batching"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.mode == "hop":
        points = [(v, c) for c in (1, 8) for v in ("local", "remote-http", "remote-grpc")]
    else:
        points = [(v, 64) for v in ("batched", "per-item")]
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    runs: dict[tuple[str, int], list[dict[str, Any]]] = {point: [] for point in points}
    with tempfile.TemporaryDirectory() as tmp, peer(Path(tmp)) as ports:
        for number in range(args.rounds):
            for variant, clients in points if number % 2 == 0 else points[::-1]:
                point = run_point(variant, clients, args.seconds, ports)
                runs[(variant, clients)].append(point)
                say(
                    f"round {number + 1} {variant:<12} {clients:>2} clients {point['throughput']:10.1f}/s "
                    f"p50 {point['p50_ms']:.3f} ms p99 {point['p99_ms']:.3f} ms batch {point['mean_batch']:.1f} "
                    f"errors {point['errors']}"
                )
    say(f"{'variant':<12} {'clients':>7} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}   note")
    for (variant, clients), found in runs.items():
        throughput = statistics.median(r["throughput"] for r in found)
        p50 = statistics.median(r["p50_ms"] for r in found)
        p99 = statistics.median(r["p99_ms"] for r in found)
        batch = statistics.median(r["mean_batch"] for r in found)
        note = ""
        if args.mode == "hop" and variant != "local":
            local = statistics.median(r["p50_ms"] for r in runs[("local", clients)])
            note = f"adds {p50 - local:.3f} ms at p50"
        if args.mode == "batching":
            note = f"{throughput / IDEAL_ITEMS_S:.1%} of the ideal {IDEAL_ITEMS_S:.0f}/s"
        say(f"{variant:<12} {clients:>7} {throughput:>10.1f} {p50:>8.3f} {p99:>8.3f} {batch:>6.1f}   {note}")
    RESULTS.mkdir(exist_ok=True)
    name = f"remote_{args.mode}" + ("" if args.rounds >= 5 else ".tmp")
    header = f"# {args.mode}: {args.rounds} rounds x {args.seconds} s; {machine()}"
    (RESULTS / f"{name}.txt").write_text(header + "\n" + "\n".join(lines) + "\n")
    serialisable = {f"{v} {c}": found for (v, c), found in runs.items()}
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "runs": serialisable}, indent=1))


if __name__ == "__main__":
    main()
