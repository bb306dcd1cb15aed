"""The OCR service at the machine's limit (issue 12): pipeserve against RapidOCR and Triton on the
same pages, in one run, with the ideal measured first.

Pages: 8 held-out generated documents of 0.5-2 megapixels (``common.document_pages``; ``--pages N``),
or the six bundled pages (``--bundled``). Every system gets the same pages in the same order.

Systems (``--systems``, comma-separated; default all but pipeserve-http):
  pipeserve            ``pipeserve.examples.ocr.pipeline()`` in process, shared by the client threads
  rapidocr-default     one RapidOCR engine shared by all client threads, onnxruntime's default threads
  rapidocr-1thread     one shared engine, intra_op 1 / inter_op 1
  rapidocr-per-client  one engine per client thread, max(1, cores // clients) intra-op threads each
  triton-engine        tritonserver, one RapidOCR engine per Python-backend instance (benchmarks/triton_ocr.py)
  triton-bls           tritonserver, a BLS model over det, cls and rec models (benchmarks/triton_ocr.py)
  pipeserve-http       ``pipeserve serve ocr`` over HTTP (only when named)
The Triton set-ups and pipeserve-http are servers on 127.0.0.1 started and stopped per point
(``triton_ocr.serving``), called over HTTP with one keep-alive connection per client. Without a
usable tritonserver (``--triton DIR``; by default the first usable of benchmarks/.peers/triton,
benchmarks/.peers/serving/triton, .venv/triton) the script prints how to install one and runs
the other systems.

The ideal, measured first: the pipe runs in a fresh worker with one client over the first
``--ideal-pages`` pages (after one unmeasured page), once per setting: det, cls and rec with
``elastic = false``, ``intra_op_threads`` t (t in 1 and the core count) and one instance (so that
a stage's batches never overlap each other: t threads are t cores), the batch ``max`` of cls and
rec b (b in 1, 8, 32; rec with ``bucket_key = "_rec_width"`` when b > 1). From ``pipe.stats()``
each node's ``compute_seconds`` per page (after minus before), times t for the ONNX nodes (t
threads for that wall time), 1 thread for the Python nodes; per node the minimum over the
settings. Ideal images/s = cores / (the sum of those CPU-seconds per page).

Load: ``pipeserve.bench.run_closed_loop`` with a fixed request count per point (default 8, 16 and
32 requests at 1, 4 and 16 clients), each point in a fresh worker process after a warm-up of about
``--warmup`` requests per client (not measured); a point that runs past ``--max-seconds`` is stopped
and reported incomplete. Each round runs, for each client count, every system, in an order rotated
by one from one client count (and round) to the next. Reported per (system, clients): the median
throughput of the rounds; p50/p90/p99 from the latencies of all rounds pooled; the requests and
measured seconds they rest on. Then the issue's targets, met or not.

    python benchmarks/ocr.py --plot docs/ocr_issue12.png   # the full run: about 1-1.5 h on 2 idle cores
    python benchmarks/ocr.py --rounds 3 --pages 8 --clients 1,4,16 --requests 8,16,32 --warmup 2 \\
        --max-seconds 600 --ideal-pages 4 --plot docs/ocr_issue12.png     # the same, defaults spelled out
    python benchmarks/ocr.py --systems pipeserve,pipeserve-http,triton-engine --bundled
    python benchmarks/ocr.py --rounds 1 --clients 1 --requests 2 --pages 2 --ideal-pages 1 \\
        --systems pipeserve,rapidocr-1thread --json /tmp/o.json --text /tmp/o.txt   # a smoke test

Writes the report to ``--text`` (benchmarks/results/ocr_issue12.txt) and everything measured, the
latencies included, to ``--json`` (benchmarks/results/ocr_issue12.json; rewritten after every
point, so an interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import io
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, document_pages, emit, exit_on_sigterm, machine, ocr_pages, run_worker

SYSTEMS = (
    "pipeserve",
    "rapidocr-default",
    "rapidocr-1thread",
    "rapidocr-per-client",
    "triton-engine",
    "triton-bls",
)
OPTIONAL = ("pipeserve-http",)
RAPIDOCR = ("rapidocr-default", "rapidocr-1thread", "rapidocr-per-client")
TRITON = ("triton-engine", "triton-bls")
HTTP = {"pipeserve-http": "pipeserve", "triton-engine": "triton-engine", "triton-bls": "triton-bls"}
ONNX_NODES = ("det", "cls", "rec")
CORES = os.cpu_count() or 1
RESULTS = ROOT / "benchmarks" / "results"
SERVER_START_S = 180.0  # triton_ocr.START_LIMIT_S: a server must be ready within this
PRE_CALLS = 2  # per point, before the closed loop: one cold, one timed (sizes the warm-up)


class PointTimeout(RuntimeError):
    """A request refused because its point ran past ``--max-seconds``."""


# --- workers (each in a fresh process) ---------------------------------------------------------


def _read_pages(folder: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(Path(folder).glob("page*.jpg"))]


def pages_worker(folder: str) -> dict[str, Any]:
    """Each page's size, and its lines as pipeserve (default configuration) reads it, once."""
    from PIL import Image

    from pipeserve.examples import ocr

    pages = _read_pages(folder)
    sizes = [Image.open(io.BytesIO(page)).size for page in pages]
    lines, seconds = [], []
    with ocr.pipeline() as pipe:
        for page in pages:
            start = time.perf_counter()
            item = pipe({"data": page})
            seconds.append(time.perf_counter() - start)
            lines.append(len(item["result"]))
    return {
        "sizes": [list(size) for size in sizes],
        "megapixels": [w * h / 1e6 for w, h in sizes],
        "bytes": [len(page) for page in pages],
        "lines": lines,
        "seconds": seconds,
    }


def ideal_worker(folder: str, count: int, threads: int, batch: int) -> dict[str, Any]:
    """One setting of the ideal: each node's compute per page, 1 client, ``count`` pages."""
    from pipeserve.examples import ocr

    pages = _read_pages(folder)[:count]
    overrides: dict[str, Any] = {"cls.max": batch, "rec.max": batch}
    if batch > 1 and "bucket_key" not in ocr.config()["rec"]:
        # rec batches only lines padded to the same width (OcrBoxes sets ``_rec_width``), as the
        # configuration asks of rec with max > 1: batching then adds no padding.
        overrides["rec.bucket_key"] = "_rec_width"
    for node in ONNX_NODES:
        overrides |= {f"{node}.elastic": False, f"{node}.intra_op_threads": threads, f"{node}.instance_num": 1}
    config = ocr.config(**overrides)
    with ocr.pipeline(**overrides) as pipe:
        pipe({"data": pages[0]})  # warm-up, not measured
        before = pipe.stats()
        start = time.perf_counter()
        lines = [len(pipe({"data": page})["result"]) for page in pages]
        wall = time.perf_counter() - start
        after = pipe.stats()
    nodes = {}
    for node, stats in after.items():
        if not isinstance(stats, dict) or "compute_seconds" not in stats:
            continue
        earlier = before.get(node, {})
        compute = stats["compute_seconds"] - earlier.get("compute_seconds", 0.0)
        batches = stats["batches"] - earlier.get("batches", 0)
        items = stats["items"] - earlier.get("items", 0)
        factor = threads if node in ONNX_NODES else 1
        nodes[node] = {
            "threads": factor,
            "max": int(config.get(node, {}).get("max", 1)),
            "mean_batch": items / batches if batches else 0.0,
            "wall_s_per_page": compute / len(pages),
            "cpu_s_per_page": factor * compute / len(pages),
        }
    return {"threads": threads, "batch": batch, "pages": len(pages), "lines": lines, "wall_s": wall, "nodes": nodes}


@contextlib.contextmanager
def _system(system: str, clients: int, options: dict[str, Any]) -> Iterator[tuple[Callable[..., Any], Any, Any]]:
    """``(call, lines_of, info)`` for ``system``: ``call(item)`` reads one page, ``lines_of`` counts
    the lines in what it returned, ``info()`` says what the system reports after the load."""
    if system == "pipeserve":
        from pipeserve.examples import ocr

        with ocr.pipeline() as pipe:

            def batching() -> dict[str, Any]:
                stats = pipe.stats()
                return {"items_per_batch": {n: round(stats[n]["mean_batch_size"], 2) for n in ONNX_NODES}}

            yield pipe, lambda item: len(item["result"]), batching
    elif system in RAPIDOCR:
        from rapidocr_onnxruntime import RapidOCR

        if system == "rapidocr-default":
            engine = RapidOCR()
            call: Callable[..., Any] = lambda item: engine(item["data"])  # noqa: E731
        elif system == "rapidocr-1thread":
            engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
            call = lambda item: engine(item["data"])  # noqa: E731
        else:
            threads = max(1, CORES // clients)
            local = threading.local()

            def call(item: dict[str, Any]) -> Any:
                if not hasattr(local, "engine"):
                    local.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
                return local.engine(item["data"])

        yield call, lambda out: len(out[0] or []), dict
    else:
        from triton_ocr import decode, serving

        lifetime = SERVER_START_S + 2 * options["max_seconds"] + 900  # a bound in case this process dies
        with serving(HTTP[system], Path(options["triton"]), options["engine_instances"], lifetime) as (server, remote):

            def reported() -> dict[str, Any]:
                return {"items_per_batch": server.batching(), "version": server.version(), "group": server.group}

            yield remote, lambda body: len(decode(body)), reported


def load_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One point: ``spec["clients"]`` closed-loop clients, ``spec["requests"]`` measured requests."""
    system, clients, requests = spec["system"], int(spec["clients"]), int(spec["requests"])
    pages = _read_pages(spec["pages"])
    with _system(system, clients, spec) as (call, lines_of, info):
        point = _measure(call, lines_of, pages, clients, requests, spec["warmup"], spec["max_seconds"])
        point.update(info())
    return {"system": system, "clients": clients, **point}


def _measure(
    call: Callable[..., Any],
    lines_of: Callable[[Any], int],
    pages: list[bytes],
    clients: int,
    requests: int,
    warmup: int,
    max_seconds: float,
) -> dict[str, Any]:
    """A fixed count of requests after a warm-up of about ``warmup`` requests per client, bounded
    by ``max_seconds`` after the warm-up window (later requests are refused and counted)."""
    from pipeserve.bench import run_closed_loop

    lock = threading.Lock()
    state = {"warm_end": math.inf, "deadline": math.inf, "warm_calls": 0, "refused": 0, "refused_measured": 0}
    lines: dict[int, int] = {}
    varied: set[int] = set()

    def bounded(item: dict[str, Any]) -> Any:
        sent = time.perf_counter()
        warm = sent < state["warm_end"]
        if sent >= state["deadline"]:
            with lock:
                state["refused"] += 1
                state["refused_measured"] += not warm
            raise PointTimeout(f"past the point's {max_seconds:g} s")
        out = call({"data": item["data"]})
        count = lines_of(out)
        with lock:
            state["warm_calls"] += warm
            if lines.setdefault(item["page"], count) != count:
                varied.add(item["page"])
        return out

    def make_item(index: int) -> dict[str, Any]:
        return {"data": pages[index % len(pages)], "page": index % len(pages)}

    begun = time.perf_counter()
    bounded(make_item(0))  # cold: builds sessions, warms caches
    start = time.perf_counter()
    bounded(make_item(1))
    single = time.perf_counter() - start
    # About ``warmup`` requests per client: the loop's window at about the throughput one request
    # alone suggests (the request in flight at the window's end completes too).
    window = max(0.5, (warmup - 1) * clients * single / min(clients, CORES))
    window = min(window, max_seconds)
    state["warm_end"] = time.perf_counter() + window
    state["deadline"] = state["warm_end"] + max_seconds
    if "requests" in inspect.signature(run_closed_loop).parameters:
        mode = "requests"
        result = run_closed_loop(bounded, make_item, clients=clients, requests=requests, warmup=window)
    else:  # a load generator without the fixed-count mode: a window that should hold ``requests``
        mode = "duration"
        seconds = min(max_seconds, requests * single / min(clients, CORES))
        result = run_closed_loop(bounded, make_item, clients=clients, seconds=seconds, warmup=window)
    errors = result.errors - state["refused_measured"]
    return {
        "mode": mode,
        "requested": requests,
        "completed": result.completed,
        "errors": errors,
        "not_run": state["refused_measured"],
        "first_error": result.first_error,
        "incomplete": bool(state["refused"]) or (mode == "requests" and result.completed + errors < requests),
        "seconds": result.seconds,
        "images_s": result.throughput,
        "latencies_ms": [round(1e3 * latency, 3) for latency in result.latencies],
        "warmup_requests": state["warm_calls"],  # the pre-calls among them
        "warmup_window_s": window,
        "single_ms": 1e3 * single,
        "point_s": time.perf_counter() - begun,
        "lines": {str(page): count for page, count in sorted(lines.items())},
        "lines_varied": sorted(varied),
    }


# --- the driver --------------------------------------------------------------------------------


def _sig(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant digits."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _versions() -> dict[str, str]:
    found = {}
    for package in ("pipeserve", "rapidocr-onnxruntime", "opencv-python-headless", "pillow", "matplotlib"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _ints(text: str, name: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"{name}: expected comma-separated whole numbers, got {text!r}")
    if not values or min(values) < 1:
        parser.error(f"{name}: expected numbers of at least 1, got {text!r}")
    return values


def _ideal(settings: list[dict[str, Any]]) -> dict[str, Any]:
    """Per node the cheapest setting (CPU-seconds per page); their sum; cores over it."""
    order: list[str] = []
    for setting in settings:
        order += [node for node in setting["nodes"] if node not in order]
    stages = []
    for node in order:
        best = min((s for s in settings if node in s["nodes"]), key=lambda s, n=node: s["nodes"][n]["cpu_s_per_page"])
        measured = best["nodes"][node]
        stages.append(
            {
                "stage": node,
                "best batch": measured["max"],
                "mean batch": round(measured["mean_batch"], 1),
                "best threads": measured["threads"] if node in ONNX_NODES else "1 (Python)",
                "CPU ms/page": 1e3 * measured["cpu_s_per_page"],
                "cpu_s_per_page": measured["cpu_s_per_page"],
            }
        )
    total = sum(stage["cpu_s_per_page"] for stage in stages)
    lines = settings[0]["lines"] if settings else []
    return {
        "stages": stages,
        "cpu_s_per_page": total,
        "images_s": _sig(CORES / total) if total else math.nan,
        "pages": settings[0]["pages"] if settings else 0,
        "lines_per_page": statistics.mean(lines) if lines else 0.0,
        "settings": settings,
    }


def _summarise(points: list[dict[str, Any]], ideal: float) -> dict[str, Any]:
    """One (system, clients): median throughput of the rounds, pooled latency percentiles."""
    from pipeserve.bench import percentile

    good = [p for p in points if "failed" not in p]
    latencies = sorted(latency for p in good for latency in p["latencies_ms"])
    rates = [p["images_s"] for p in good if p["completed"]]
    median = _sig(statistics.median(rates)) if rates else math.nan
    p50, p90, p99 = (percentile(latencies, q) for q in (0.50, 0.90, 0.99))
    return {
        "images_s": median,
        "range": f"{_sig(min(rates))}-{_sig(max(rates))}" if rates else "-",
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "p99/p50": p99 / p50 if latencies else math.nan,
        "requests": len(latencies),
        "seconds": sum(p["seconds"] for p in good),
        "errors": sum(p["errors"] for p in good),
        "rounds": len(good),
        "incomplete": sum(bool(p["incomplete"]) for p in good),
        "failed": len(points) - len(good),
        "of_ideal": median / ideal if ideal and math.isfinite(ideal) else math.nan,
        "warmup_requests": sum(p["warmup_requests"] for p in good),
    }


def _targets(summary: dict[tuple[str, int], dict[str, Any]], clients: list[int], ideal: float) -> list[dict[str, str]]:
    """Issue 12's targets from the medians (throughput) and pooled percentiles (latency)."""
    rows: list[dict[str, str]] = []

    def add(target: str, figure: str, met: bool | None) -> None:
        rows.append(
            {"target": target, "figure": figure, "met": "n/a" if met is None else ("met" if met else "NOT met")}
        )

    def get(system: str, count: int) -> dict[str, Any] | None:
        found = summary.get((system, count))
        return found if found and math.isfinite(found["images_s"]) else None

    def best(systems: tuple[str, ...], count: int) -> tuple[str, dict[str, Any]] | None:
        present = [(s, found) for s in systems if (found := get(s, count))]
        return max(present, key=lambda pair: pair[1]["images_s"]) if present else None

    has_ideal = bool(ideal) and math.isfinite(ideal)
    if 1 in clients:
        ours, peer = get("pipeserve", 1), best(RAPIDOCR, 1)
        if ours and peer:
            name, theirs = peer
            ratio = ours["images_s"] / theirs["images_s"]
            add(
                "1 client: throughput >= 1.1x the best RapidOCR",
                f"{ours['images_s']:.3g} vs {name} {theirs['images_s']:.3g} img/s = {ratio:.2f}x",
                ratio >= 1.1,
            )
            add(
                "1 client: p50 lower than the best RapidOCR's",
                f"{ours['p50_ms']:.0f} vs {name} {theirs['p50_ms']:.0f} ms",
                ours["p50_ms"] < theirs["p50_ms"],
            )
        else:
            add("1 client: against the best RapidOCR", "pipeserve or RapidOCR not measured", None)
    for count in (c for c in (4, 16) if c in clients):
        ours, peer = get("pipeserve", count), best(RAPIDOCR + TRITON, count)
        if not (ours and peer):
            add(f"{count} clients: against the best of RapidOCR and Triton", "not measured", None)
            continue
        name, theirs = peer
        ratio = ours["images_s"] / theirs["images_s"]
        need = 1.3 * theirs["images_s"]
        rule = "1.3x the best"
        if has_ideal and 0.9 * ideal < need:
            need, rule = 0.9 * ideal, f"90% of the ideal, lower than 1.3x the best ({need:.3g})"
        add(
            f"{count} clients: throughput >= 1.3x the best of RapidOCR and Triton, or >= 90% of the ideal if lower",
            f"{ours['images_s']:.3g} vs {name} {theirs['images_s']:.3g} img/s = {ratio:.2f}x; "
            f"needs {need:.3g} = {rule}",
            ours["images_s"] >= need,
        )
        others = [pair for pair in (best(RAPIDOCR, count), best(TRITON, count)) if pair]
        add(
            f"{count} clients: p99 lower than the best RapidOCR's and the best Triton's",
            f"{ours['p99_ms']:.0f} ms vs " + ", ".join(f"{n} {s['p99_ms']:.0f} ms" for n, s in others),
            all(ours["p99_ms"] < s["p99_ms"] for _, s in others) if len(others) == 2 else None,
        )
    four, sixteen = get("pipeserve", 4), get("pipeserve", 16)
    if four and sixteen:
        add(
            "pipeserve: throughput at 16 clients >= at 4",
            f"{sixteen['images_s']:.3g} vs {four['images_s']:.3g} img/s",
            sixteen["images_s"] >= four["images_s"],
        )
    if sixteen:
        add(
            "pipeserve, 16 clients: p99 <= 1.5x p50",
            f"p99/p50 = {sixteen['p99/p50']:.2f} ({sixteen['p99_ms']:.0f} / {sixteen['p50_ms']:.0f} ms)",
            sixteen["p99/p50"] <= 1.5,
        )
    for count, ours in ((4, four), (16, sixteen)):
        if ours and has_ideal:
            add(
                f"pipeserve, {count} clients: >= 90% of the ideal",
                f"{ours['images_s']:.3g} of {ideal:.3g} img/s = {ours['images_s'] / ideal:.0%}",
                ours["images_s"] >= 0.9 * ideal,
            )
    return rows


def _plot(path: str, clients: list[int], systems: list[str], summary: dict[Any, Any], ideal: float) -> str:
    try:
        import matplotlib
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install matplotlib), {path} not written"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system in systems:
        points = [(c, summary[(system, c)]) for c in clients if (system, c) in summary]
        left.plot([c for c, _ in points], [s["images_s"] for _, s in points], marker="o", label=system)
        right.plot([c for c, _ in points], [s["p99_ms"] for _, s in points], marker="o", label=system)
    if ideal and math.isfinite(ideal):
        left.axhline(ideal, linestyle="--", color="grey", label=f"ideal {ideal:.3g}")
    left.set(xlabel="clients", ylabel="images/s (median of rounds)", title="Throughput", xscale="log")
    right.set(xlabel="clients", ylabel="p99 latency (ms, pooled)", title="p99 latency", xscale="log")
    for axis in (left, right):
        axis.set_xticks(clients)
        axis.set_xticklabels([str(c) for c in clients])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"wrote {path}"


def _stop_groups(groups: set[int]) -> list[str]:
    """Servers of this run still alive (ps lines); each such process group is then killed."""
    from triton_ocr import _ps_groups

    left = _ps_groups(groups)
    for group in {int(line.split()[1]) for line in left}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=8, help="generated held-out pages (default 8)")
    parser.add_argument("--bundled", action="store_true", help="the six bundled pages instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", default="8,16,32", help="measured requests per point, one per client count")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up requests per client, about (default 2)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="cap on a point's measured phase")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"of {', '.join(SYSTEMS + OPTIONAL)}")
    parser.add_argument("--triton", type=Path, help="where get-triton.sh installed Triton")
    parser.add_argument("--engine-instances", type=int, default=2, help="instances of triton-engine's model")
    parser.add_argument("--ideal-pages", type=int, default=4, help="pages per ideal setting (0: no ideal)")
    parser.add_argument("--ideal-threads", default=f"1,{CORES}", help="intra-op threads tried for the ideal")
    parser.add_argument("--ideal-batches", default="1,8,32", help="batch max of cls and rec tried for the ideal")
    parser.add_argument("--json", default=str(RESULTS / "ocr_issue12.json"))
    parser.add_argument("--text", default=str(RESULTS / "ocr_issue12.txt"))
    parser.add_argument("--plot", help="PNG: throughput and p99 against clients per system, the ideal as a line")
    args = parser.parse_args()
    from pipeserve.bench import format_table

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS + OPTIONAL]
    if unknown or not systems:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS + OPTIONAL)}")
    clients = _ints(args.clients, "--clients", parser)
    requests = _ints(args.requests, "--requests", parser)
    if len(requests) == 1:
        requests *= len(clients)
    if len(requests) != len(clients):
        parser.error("--requests: one count, or one per client count")
    ideal_threads = sorted(set(_ints(args.ideal_threads, "--ideal-threads", parser)))
    ideal_batches = sorted(set(_ints(args.ideal_batches, "--ideal-batches", parser)))
    if args.rounds < 1 or args.pages < 1 or args.ideal_pages < 0 or args.warmup < 1 or args.max_seconds <= 0:
        parser.error("need --rounds, --pages, --warmup >= 1, --ideal-pages >= 0, --max-seconds > 0")

    from triton_ocr import find_triton, triton_versions

    notes: list[str] = []
    triton, hint = find_triton(args.triton)
    if hint and any(s in TRITON for s in systems):
        print(hint, file=sys.stderr)
        skipped = [s for s in systems if s in TRITON]
        systems = [s for s in systems if s not in TRITON]
        notes.append(f"not measured: {', '.join(skipped)} (no usable tritonserver; see the message on stderr)")
        if not systems:
            raise SystemExit(2)
    uses_triton = any(s in TRITON for s in systems)

    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="ocr_issue12_pages_")
    groups: set[int] = set()
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), **_versions()},
        "options": {**vars(args), "triton": str(triton) if uses_triton else None},
        "systems": systems,
        "notes": notes,
    }
    # A worker gets as long as a server's start, its warm-up and its measured phase can take.
    worker_timeout = SERVER_START_S + 2 * args.max_seconds + 600

    def save() -> None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")

    def worker(kind: str, *rest: str) -> dict[str, Any]:
        return run_worker(sys.executable, Path(__file__), [kind, *rest], timeout=worker_timeout)

    try:
        pages = ocr_pages() if args.bundled else document_pages(args.pages)
        for index, page in enumerate(pages):
            (Path(folder) / f"page{index:03d}.jpg").write_bytes(page)
        print(f"{len(pages)} pages; reading each once with pipeserve", file=sys.stderr)
        report["pages"] = {"kind": "bundled" if args.bundled else "generated held-out", **worker("pages", folder)}
        save()

        ideal_value = math.nan
        if args.ideal_pages:
            settings = []
            for threads in ideal_threads:
                for batch in ideal_batches:
                    count = str(min(args.ideal_pages, len(pages)))
                    settings.append(worker("ideal", folder, count, str(threads), str(batch)))
                    total = sum(n["cpu_s_per_page"] for n in settings[-1]["nodes"].values())
                    print(
                        f"ideal setting: {threads} thread(s), batch {batch}: {1e3 * total:.0f} CPU-ms a page",
                        file=sys.stderr,
                    )
            report["ideal"] = _ideal(settings)
            ideal_value = report["ideal"]["images_s"]
            save()
            print(_ideal_text(report["ideal"], format_table), file=sys.stderr)

        points: dict[tuple[str, int], list[dict[str, Any]]] = {}
        report["points"] = []
        step = 0
        for round_ in range(args.rounds):
            for count, wanted in zip(clients, requests, strict=True):
                shift = step % len(systems)
                step += 1
                for system in systems[shift:] + systems[:shift]:
                    spec = {
                        "system": system,
                        "clients": count,
                        "requests": wanted,
                        "pages": folder,
                        "warmup": args.warmup,
                        "max_seconds": args.max_seconds,
                        "triton": str(triton),
                        "engine_instances": args.engine_instances,
                    }
                    begun = time.monotonic()
                    try:
                        result = worker("load", json.dumps(spec))
                    except RuntimeError as exc:
                        result = {"system": system, "clients": count, "failed": str(exc)[-2000:]}
                    result["round"] = round_ + 1
                    result["wall_s"] = time.monotonic() - begun
                    if "group" in result:
                        groups.add(result["group"])
                    points.setdefault((system, count), []).append(result)
                    report["points"].append(result)
                    save()
                    print(_progress(result), file=sys.stderr)

        summary = {key: _summarise(value, ideal_value) for key, value in points.items()}
        report["summary"] = [{"system": s, "clients": c, **v} for (s, c), v in summary.items()]
        report["targets"] = _targets(summary, clients, ideal_value)
        if uses_triton:
            versions = {p["version"] for p in report["points"] if p.get("version") and p["system"] in TRITON}
            report["machine"]["tritonserver"] = ", ".join(sorted(versions)) or "?"
            report["machine"].update(triton_versions(triton))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        left = _stop_groups(groups)
        report["servers_left_running"] = left
        report["wall_s"] = time.monotonic() - started
        save()

    text = _report_text(report, summary, systems, clients, requests, ideal_value, format_table)
    if args.plot:
        text += "\n" + _plot(args.plot, clients, systems, summary, ideal_value) + "\n"
    Path(args.text).parent.mkdir(parents=True, exist_ok=True)
    Path(args.text).write_text(text)
    print(text)
    print(f"wrote {args.text} and {args.json}", file=sys.stderr)


def _progress(point: dict[str, Any]) -> str:
    head = f"round {point['round']}: {point['system']:>19} {point['clients']:>2} clients"
    if "failed" in point:
        return f"{head} FAILED: {point['failed'].strip().splitlines()[-1]}"
    return (
        f"{head} {point['images_s']:.3g} img/s, {point['completed']}/{point['requested']} requests in "
        f"{point['seconds']:.1f} s (warm-up {point['warmup_requests']}; {point['wall_s']:.0f} s in all)"
        + (f", errors {point['errors']} ({point['first_error']})" if point["errors"] else "")
        + (" INCOMPLETE" if point["incomplete"] else "")
    )


def _ideal_text(ideal: dict[str, Any], format_table: Callable[..., str]) -> str:
    columns = ["stage", "best batch", "mean batch", "best threads", "CPU ms/page"]
    settings = ideal["settings"]
    tried = sorted({s["threads"] for s in settings}), sorted({s["batch"] for s in settings})
    return "\n".join(
        [
            f"The ideal, measured first ({ideal['pages']} page(s) per setting, 1 client, after one unmeasured page; "
            f"ONNX nodes elastic = false, one instance, intra-op threads {tried[0]}; batch max of cls and rec "
            f"{tried[1]}; per stage the cheapest setting, CPU-ms = compute x threads; Python nodes 1 thread):",
            format_table(ideal["stages"], columns),
            f"Sum: {1e3 * ideal['cpu_s_per_page']:.0f} CPU-ms a page ({ideal['lines_per_page']:.1f} lines a page); "
            f"ideal = {CORES} cores / that = {ideal['images_s']:.3g} images/s",
        ]
    )


def _report_text(
    report: dict[str, Any],
    summary: dict[tuple[str, int], dict[str, Any]],
    systems: list[str],
    clients: list[int],
    requests: list[int],
    ideal: float,
    format_table: Callable[..., str],
) -> str:
    pages = report["pages"]
    mp = pages["megapixels"]
    out = [
        "The OCR service at the machine's limit (issue 12): benchmarks/ocr.py",
        f"command: {report['command']}",
        f"started {report['started']}, wall {report['wall_s'] / 60:.1f} min",
        "machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()),
        f"pages: {len(mp)} {pages['kind']}, {min(mp):.2f}-{max(mp):.2f} megapixels (mean {statistics.mean(mp):.2f}); "
        f"lines per page as pipeserve reads them: {pages['lines']} (mean {statistics.mean(pages['lines']):.1f})",
        f"load: closed-loop clients {clients}, {requests} measured requests per point, after about "
        f"{report['options']['warmup']} warm-up requests per client; {report['options']['rounds']} round(s), "
        "a fresh worker process (and server) per point, systems in an order rotated per point; "
        f"a point's measured phase capped at {report['options']['max_seconds']:g} s",
        *report["notes"],
        "",
    ]
    if "ideal" in report:
        out += [_ideal_text(report["ideal"], format_table), ""]
    rows = []
    for count in clients:
        for system in systems:
            s = summary.get((system, count))
            if s is None:
                continue
            same = [p for p in report["points"] if p["system"] == system and p["clients"] == count and "lines" in p]
            read = {page: n for p in same for page, n in p["lines"].items()}
            agree = sum(n == pages["lines"][int(page)] for page, n in read.items())
            rows.append(
                {
                    "clients": count,
                    "system": system,
                    "img/s": s["images_s"],
                    "rounds min-max": s["range"],
                    "p50 ms": s["p50_ms"],
                    "p90 ms": s["p90_ms"],
                    "p99 ms": s["p99_ms"],
                    "p99/p50": round(s["p99/p50"], 2) if math.isfinite(s["p99/p50"]) else "-",
                    "errors": s["errors"],
                    "requests": s["requests"],
                    "seconds": round(s["seconds"], 1),
                    "rounds": s["rounds"],
                    "of ideal": f"{s['of_ideal']:.0%}" if math.isfinite(s["of_ideal"]) else "-",
                    "lines as pipeserve": f"{agree}/{len(read)} pages",
                    "notes": ", ".join(
                        part
                        for part in (
                            f"{s['incomplete']} incomplete" if s["incomplete"] else "",
                            f"{s['failed']} failed" if s["failed"] else "",
                        )
                        if part
                    ),
                }
            )
    out += [
        "img/s: the median of the rounds (3 significant digits); p50/p90/p99: of the latencies of all rounds "
        "pooled; requests and seconds: what those figures rest on (all rounds); lines as pipeserve: pages whose "
        "line count equals pipeserve's first reading",
        format_table(rows),
        "",
    ]
    batching = [
        f"  {p['system']} {p['clients']} clients round {p['round']}: {p['items_per_batch']}"
        for p in report["points"]
        if p.get("items_per_batch")
    ]
    if batching:
        out += ["Items per batch (ONNX nodes; Triton: per model execution, since the server started):", *batching, ""]
    failures = [
        f"  {p['system']} {p['clients']} clients round {p['round']}: {p['failed']}"
        for p in report["points"]
        if "failed" in p
    ]
    if failures:
        out += ["Failed points:", *failures, ""]
    out += ["Targets (issue 12):", format_table(report["targets"]) or "(none computable)", ""]
    left = report["servers_left_running"]
    out.append(f"servers left running (ps, by process group): {'none' if not left else left}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        exit_on_sigterm()
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "pages":
            emit(pages_worker(rest[0]))
        elif kind == "ideal":
            emit(ideal_worker(rest[0], int(rest[1]), int(rest[2]), int(rest[3])))
        elif kind == "load":
            emit(load_worker(json.loads(rest[0])))
        else:
            raise SystemExit(f"unknown worker {kind!r}")
    else:
        exit_on_sigterm()  # a SIGTERM stops the worker in flight (and its server) before exiting
        main()
