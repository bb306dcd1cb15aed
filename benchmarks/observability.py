"""What watching costs: metrics and tracing off, metrics on, tracing every request, against the
code before observability existed (issue 10's performance targets).

Variants, interleaved within each round, every point in a fresh process:

- ``before``: pipeserve at ``--before`` (default: the last commit before issue 10), from a git
  worktree made here;
- ``off``: this tree with metrics off (``--no-metrics``) and no tracing;
- ``metrics``: this tree with metrics on and ``/metrics`` scraped every second during the load
  (Prometheus scrapes every 15 s by default: this is 15 times harsher);
- ``trace100``: this tree with every request traced into a JSON-lines file (``--trace-rate 1``).

Workloads:

- ``http``: the no-op model of benchmarks/serving.py (``serving/pipeserve/identity.toml``), one FP32
  value as Triton JSON POSTed by wrk at 8 keep-alive connections;
- ``ocr``: the bundled OCR pipeline in process, 4 closed-loop clients over the bundled pages, a
  fixed number of pages per point after a warm-up (for ``metrics``: ``pipeserve.metrics.register``
  plus a scrape a second; for ``trace100``: ``trace_rate = 1`` into a JSON-lines file).

    .venv/bin/python benchmarks/observability.py http --rounds 7 --seconds 10
    .venv/bin/python benchmarks/observability.py ocr --rounds 7 --pages 24

Prints each round, then per variant the median throughput and its ratio to ``off`` (and ``off``'s to
``before``) with the ratios' min-max over rounds (each round's ratio is taken within the round).
Results go to ``benchmarks/results/observability_{http,ocr}.{txt,json}``.
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
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, emit, machine, ocr_pages
from serving import APPS, MODEL, Endpoint, Service, free_ports, http_infer_ok, run_wrk

BEFORE = "8644dcb"  # the last commit before issue 10
VARIANTS = ("before", "off", "metrics", "trace100")
RESULTS = ROOT / "benchmarks" / "results"


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached git worktree of ``commit``, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pipeserve-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def scraping(url: str, every: float) -> tuple[threading.Event, threading.Thread, list[int]]:
    """A thread GETting ``url`` every ``every`` seconds until the event is set; counts the bytes."""
    stop, sizes = threading.Event(), []

    def scrape() -> None:
        while not stop.wait(every):
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
                sizes.append(len(response.read()))

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    return stop, thread, sizes


# ------------------------------------------------------------------------------------------------ http
def http_point(variant: str, src: Path, seconds: int, connections: int, workdir: Path, tag: str) -> dict[str, Any]:
    http_port, grpc_port = free_ports(2)
    argv = [sys.executable, "-m", "pipeserve", "serve", str(APPS / "pipeserve" / f"{MODEL}.toml")]
    argv += ["--port", str(http_port), "--grpc-port", str(grpc_port)]
    if variant == "off":
        argv.append("--no-metrics")
    elif variant == "trace100":
        argv += ["--no-metrics", "--trace-rate", "1", "--trace-file", str(workdir / f"{tag}.jsonl")]
    endpoint = Endpoint(Service("pipeserve", argv, workdir / f"{tag}.log", {"PYTHONPATH": str(src)}), http_port)
    try:
        deadline = time.monotonic() + 60
        while not http_infer_ok(endpoint.infer_url, echo=False):
            if time.monotonic() > deadline or not endpoint.service.alive():
                raise RuntimeError(f"{variant} did not start:\n{endpoint.service.tail()}")
            time.sleep(0.2)
        run_wrk(endpoint.infer_url, connections, 2)  # warm-up
        scraper = scraping(f"http://127.0.0.1:{http_port}/metrics", 1.0) if variant == "metrics" else None
        result = run_wrk(endpoint.infer_url, connections, seconds)
        if scraper is not None:
            scraper[0].set()
            scraper[1].join()
            result["scrapes"] = len(scraper[2])
            result["scrape_bytes"] = max(scraper[2], default=0)
        point = {key: result[key] for key in ("throughput", "p50_ms", "p99_ms", "errors")}
        if scraper is not None:
            point["scrapes"] = result["scrapes"]
        return {"variant": variant, **point}
    finally:
        endpoint.service.stop()


# ------------------------------------------------------------------------------------------------ ocr
def ocr_worker(variant: str, pages_wanted: int, clients: int, trace_file: str) -> dict[str, Any]:
    """One OCR point in this (fresh) process: ``pages_wanted`` pages from ``clients`` threads."""
    import pipeserve as ps
    from pipeserve.examples import ocr

    config = ocr.config()
    if variant == "trace100":
        config = {**config, "global": {**dict(config.get("global", {})), "trace_rate": 1.0, "trace_file": trace_file}}
    pages = ocr_pages()
    with ps.pipe(config) as pipe:
        for page in pages[:2]:
            pipe({"data": page})  # warm-up
        stop_scrape: threading.Event | None = None
        if variant == "metrics":
            import prometheus_client

            import pipeserve.metrics

            registry = prometheus_client.CollectorRegistry()
            pipeserve.metrics.register(pipe, model="ocr", registry=registry)
            stop_scrape = threading.Event()

            def scrape() -> None:
                assert stop_scrape is not None
                while not stop_scrape.wait(1.0):
                    pipeserve.metrics.exposition(registry)

            threading.Thread(target=scrape, daemon=True).start()
        taken = iter(range(pages_wanted))
        lock = threading.Lock()
        latencies: list[float] = []

        def client() -> None:
            while True:
                with lock:
                    index = next(taken, None)
                if index is None:
                    return
                start = time.perf_counter()
                pipe({"data": pages[index % len(pages)]})
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        if stop_scrape is not None:
            stop_scrape.set()
        if variant == "trace100":
            pipe.flush_traces()
    latencies.sort()
    return {
        "variant": variant,
        "throughput": pages_wanted / elapsed,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def ocr_point(variant: str, src: Path, pages: int, clients: int, workdir: Path, tag: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    argv = [sys.executable, __file__, "worker", variant, str(pages), str(clients), str(workdir / f"{tag}.jsonl")]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------------ report
def summarise(rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        f"{'variant':<10} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8}   ratio (median, min-max over rounds)"
    ]
    for variant in VARIANTS:
        runs = [r[variant] for r in rounds if variant in r]
        if not runs:
            continue
        base = "before" if variant == "off" else "off"
        ratios = [r[variant]["throughput"] / r[base]["throughput"] for r in rounds if variant in r and base in r]
        ratio = (
            f"{statistics.median(ratios):.3f} of {base} ({min(ratios):.3f}-{max(ratios):.3f})"
            if variant != "before" and ratios
            else "-"
        )
        lines.append(
            f"{variant:<10} {statistics.median(x['throughput'] for x in runs):>15.2f} "
            f"{statistics.median(x['p50_ms'] for x in runs):>8.2f} {statistics.median(x['p99_ms'] for x in runs):>8.2f}"
            f"   {ratio}"
        )
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        variant, pages, clients, trace_file = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        emit(ocr_worker(variant, pages, clients, trace_file))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=("http", "ocr"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=10, help="http: seconds per point")
    parser.add_argument("--connections", type=int, default=8, help="http: wrk connections")
    parser.add_argument("--pages", type=int, default=24, help="ocr: pages per point")
    parser.add_argument("--clients", type=int, default=4, help="ocr: closed-loop clients")
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    rounds: list[dict[str, dict[str, Any]]] = []
    out_lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        out_lines.append(line)

    with worktree(args.before) as old, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for number in range(args.rounds):
            found: dict[str, dict[str, Any]] = {}
            order = variants if number % 2 == 0 else variants[::-1]  # alternate who goes first
            for variant in order:
                src = old / "src" if variant == "before" else ROOT / "src"
                tag = f"{args.workload}-{variant}-{number}"
                if args.workload == "http":
                    point = http_point(variant, src, args.seconds, args.connections, workdir, tag)
                else:
                    point = ocr_point(variant, src, args.pages, args.clients, workdir, tag)
                found[variant] = point
                figures = f"{point['throughput']:10.2f}/s p50 {point['p50_ms']:.2f} ms p99 {point['p99_ms']:.2f} ms"
                say(f"round {number + 1} {variant:<9} {figures}")
            rounds.append(found)
    for line in summarise(rounds):
        say(line)
    env = machine()
    if args.workload == "http":
        load = f"{args.seconds} s at {args.connections} connections"
    else:
        load = f"{args.pages} pages from {args.clients} clients"
    header = f"# {args.workload}: {args.rounds} rounds, {load}; before = {args.before}; {env}"
    RESULTS.mkdir(exist_ok=True)
    name = f"observability_{args.workload}" + ("" if args.rounds >= 7 and variants == list(VARIANTS) else ".tmp")
    (RESULTS / f"{name}.txt").write_text(header + "\n" + "\n".join(out_lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"args": vars(args), "machine": env, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
