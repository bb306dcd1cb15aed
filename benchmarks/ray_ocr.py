"""Issue 14: pipeserve on Ray Serve, measured against the way a Ray user builds the same service and
against ``pipeserve serve`` on the same two cores.

Systems (each point in a fresh process, with a fresh local Ray cluster of 2 CPUs, every server on
loopback; load over HTTP from the same process, 16 closed-loop clients by default):

* ``ray-pipeserve``: ``pipeserve.ray.app(["ocr"])``, one ingress replica holding the whole pipeline
  (its pipe's CPU budget: the replica's 2 CPUs), OIP at Ray's proxy.
* ``ray-pipeserve-2``: the same with 2 replicas, 1 CPU each (the budget split).
* ``ray-plain``: benchmarks/ray_plain_ocr.py, one deployment per model with ``@serve.batch`` and
  handles between them, pre/post-processing in the ingress; det and rec 2 replicas each (as
  ocr.toml's 2 instances), rec reading one line a call (as ocr.toml), 1 ONNX thread per session.
* ``ray-plain-rapidocr``: the same, rec reading RapidOCR's groups of 6 lines (its own default).
* ``pipeserve-serve``: ``pipeserve serve ocr`` (one process, HTTP), the one-machine reference.
* ``noop-serve`` / ``noop-ray``: a no-op model (Identity, one FP32) behind ``pipeserve serve`` and
  behind Ray's proxy: what the path itself costs, as machine CPU per request (every process,
  the load generator's included, from /proc/stat).

Pages: 8 held-out generated documents (pipeserve.examples.ocr.documents.benchmark_pages), as in
issue 12's benchmark. Each point warms up with one request per client, then measures a fixed count.

    python benchmarks/ray_ocr.py [--rounds 3] [--clients 16] [--requests 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OCR_SYSTEMS = ("ray-pipeserve", "ray-pipeserve-2", "ray-plain", "ray-plain-rapidocr", "pipeserve-serve")
NOOP_SYSTEMS = ("noop-serve", "noop-ray")
NOOP_TOML = (
    'name = "noop"\nbackend = "Identity"\n'
    'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
    'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(url: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not _ready(url):
        if time.monotonic() > end:
            raise RuntimeError(f"{url} never became ready")
        time.sleep(0.2)


def _cpu_seconds() -> float:
    """CPU time the whole machine has spent (user, nice, system, irq, softirq), in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
    return ticks / os.sysconf("SC_CLK_TCK")


class _RawPost:
    """POST the page's bytes (the plain Ray ingress's interface); one connection per thread."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.local = threading.local()

    def __call__(self, item: dict[str, Any]) -> bytes:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        connection.request("POST", self.path, body=item["data"], headers={"content-type": "image/jpeg"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return body


def _start_ray() -> Any:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    return ray


def point(spec: dict[str, Any]) -> dict[str, Any]:
    """Start one system, warm it up, measure it; its figures."""
    from pipeserve.bench.loadgen import run_closed_loop
    from pipeserve.bench.remote import remote_call

    system, clients, requests = spec["system"], spec["clients"], spec["requests"]
    port = _free_port()
    pages = [p.read_bytes() for p in sorted(Path(spec["pages"]).glob("page*.jpg"))]
    noop = system.startswith("noop")
    process = None
    ray = None
    try:
        if system in ("pipeserve-serve", "noop-serve"):
            source = spec["noop_toml"] if noop else "ocr"
            command = [sys.executable, "-m", "pipeserve", "serve", source, "--port", str(port), "--grpc-port", "-1"]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(f"http://127.0.0.1:{port}/v2/health/ready", 120)
            call: Any = remote_call(f"http://127.0.0.1:{port}", "noop" if noop else "ocr")
        else:
            ray = _start_ray()
            from ray import serve

            serve.start(
                http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"},
            )
            if system.startswith("ray-plain"):
                sys.path.insert(0, str(REPO))
                from benchmarks.ray_plain_ocr import build_app

                lines = 1 if system == "ray-plain" else None
                serve.run(build_app(cpus=2.0, rec_lines=lines, det_replicas=2, rec_replicas=2), route_prefix="/ocr")
                _wait(f"http://127.0.0.1:{port}/-/routes", 60)
                call = _RawPost(port, "/ocr")
            else:
                import pipeserve.ray as pray

                replicas = 2 if system == "ray-pipeserve-2" else 1
                source = [spec["noop_toml"]] if noop else ["ocr"]
                serve.run(pray.app(source, replicas=replicas, cpus=2.0), name="pipeserve", route_prefix="/")
                _wait(f"http://127.0.0.1:{port}/v2/health/ready", 60)
                call = remote_call(f"http://127.0.0.1:{port}", "noop" if noop else "ocr")

        def item(index: int) -> dict[str, Any]:
            return {"data": 1.0} if noop else {"data": pages[index % len(pages)]}

        # Warm-up: every client once (OCR), or a second of calls (no-op).
        run_closed_loop(call, item, clients=clients, requests=clients if not noop else 200, warmup=0.0)
        cpu = _cpu_seconds()
        result = run_closed_loop(call, item, clients=clients, requests=requests, warmup=0.0, label=system)
        cpu = _cpu_seconds() - cpu
        figures = result.summary()
        figures["cpu_ms_per_request"] = round(1e3 * cpu / max(1, result.completed), 3)
        figures["first_error"] = result.first_error
        return figures
    finally:
        if ray is not None:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        if process is not None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _run_point(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--point", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"label": spec["system"], "error": (done.stderr or done.stdout)[-2000:]}
    return dict(json.loads(lines[-1]))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": sys.version.split()[0]}
    for package in ("pipeserve", "ray", "onnxruntime", "rapidocr-onnxruntime", "numpy"):
        try:
            found[package] = version(package)
        except Exception:  # noqa: BLE001 - absent: not reported
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32, help="measured OCR requests per point")
    parser.add_argument("--noop-requests", type=int, default=2000)
    parser.add_argument("--systems", default=",".join(OCR_SYSTEMS + NOOP_SYSTEMS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ray_issue14"))
    args = parser.parse_args()
    if args.point:
        print(json.dumps(point(json.loads(args.point))), flush=True)
        return
    systems = [s for s in args.systems.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="ray-ocr-") as folder:
        from pipeserve.examples.ocr.documents import benchmark_pages

        for index, page in enumerate(benchmark_pages(8)):
            (Path(folder) / f"page{index}.jpg").write_bytes(page.jpeg())
        noop_toml = Path(folder) / "noop.toml"
        noop_toml.write_text(NOOP_TOML)
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        started = time.time()
        for round_ in range(args.rounds):
            for system in systems:
                noop = system.startswith("noop")
                spec = {
                    "system": system,
                    "clients": args.clients,
                    "requests": args.noop_requests if noop else args.requests,
                    "pages": folder,
                    "noop_toml": str(noop_toml),
                }
                figures = _run_point(spec)
                figures["round"] = round_
                results[system].append(figures)
                shown = {k: figures.get(k) for k in ("throughput", "p50_ms", "p99_ms", "errors", "cpu_ms_per_request")}
                print(f"round {round_} {system}: {shown}{' ' + figures['error'][-300:] if 'error' in figures else ''}")
                sys.stdout.flush()
    summary = _summarise(results)
    report = {
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "requests": args.requests,
        "rounds": args.rounds,
        "minutes": round((time.time() - started) / 60, 1),
        "machine": f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}",
        "versions": _versions(),
        "summary": summary,
        "points": results,
    }
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    text = _report_text(report)
    Path(args.out + ".txt").write_text(text)
    print(text)


def _summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians: dict[str, dict[str, float]] = {}
    for system, points in results.items():
        good = [p for p in points if "error" not in p]
        medians[system] = {
            key: _median([p[key] for p in good])
            for key in ("throughput", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")
        }
    ratios: dict[str, Any] = {}

    def per_round(a: str, b: str, key: str = "throughput") -> list[float]:
        pairs = zip(results.get(a, []), results.get(b, []), strict=False)
        return [x[key] / y[key] for x, y in pairs if "error" not in x and "error" not in y and y[key]]

    for name, (a, b) in {
        "ray-pipeserve / ray-plain": ("ray-pipeserve", "ray-plain"),
        "ray-pipeserve / ray-plain-rapidocr": ("ray-pipeserve", "ray-plain-rapidocr"),
        "ray-pipeserve / pipeserve-serve": ("ray-pipeserve", "pipeserve-serve"),
        "ray-pipeserve-2 / ray-pipeserve": ("ray-pipeserve-2", "ray-pipeserve"),
        "noop-ray / noop-serve": ("noop-ray", "noop-serve"),
    }.items():
        rounds = per_round(a, b)
        if rounds:
            ratios[name] = {"median": round(_median(rounds), 3), "rounds": [round(r, 3) for r in rounds]}
    return {"medians": medians, "throughput_ratios": ratios}


def _report_text(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['command']}",
        f"# {report['machine']}; {report['versions']}",
        f"# {report['rounds']} rounds, {report['clients']} clients, {report['requests']} OCR requests a point; "
        f"{report['minutes']} min",
        "",
        f"{'system':<22}{'img/s or req/s':>16}{'p50 ms':>12}{'p99 ms':>12}{'CPU ms/req':>12}{'errors':>8}",
    ]
    for system, figures in report["summary"]["medians"].items():
        lines.append(
            f"{system:<22}{figures['throughput']:>16.4g}{figures['p50_ms']:>12.1f}{figures['p99_ms']:>12.1f}"
            f"{figures['cpu_ms_per_request']:>12.2f}{figures['errors']:>8.0f}"
        )
    lines += ["", "throughput ratios, per round (same round: side by side), median:"]
    for name, ratio in report["summary"]["throughput_ratios"].items():
        lines.append(f"  {name:<38} {ratio['median']:.3f}  (rounds {ratio['rounds']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
