"""Serving overhead over the network: a no-op model over HTTP and gRPC, pipeserve against its peers.

``http``: one FP32 value as Triton JSON (``{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"FP32",
"data":[1]}]}``) POSTed by wrk (one thread, N keep-alive connections) to

- ``pipeserve``: ``pipeserve serve`` on ``serving/pipeserve/identity.toml`` (``Identity``, instance_num 2,
  max 8, INPUT0 -> OUTPUT0, FP32 [1]);
- ``triton``: tritonserver 2.51 on ``serving/triton`` (a Python-backend identity with dynamic batching,
  max_batch_size 64, two CPU instances, metrics off);
- ``litserve``, ``litserve-batch``: ``serving/litserve_app.py`` without and with batching (up to 8);
- ``ray``: Ray Serve's HTTP proxy in front of ``serving/ray_app.py`` (one replica, num_cpus 0.1,
  max_ongoing_requests 256, access log off);
- ``echo``: ``serving/asgi_echo.py``, a bare ASGI app on uvicorn + uvloop + httptools that returns the
  body (the ceiling of pipeserve's own stack).

LitServe and Ray get the same Triton JSON body and answer OUTPUT0 in the same JSON shape. Only 2xx
responses count (wrk's "Non-2xx or 3xx" responses, status >= 400, and socket errors are taken off).

``grpc``: perf_analyzer (``-i grpc``, ``count_windows``, unary ModelInfer with raw FP32 [1, 1]) at
concurrency 1 and 8 against ``pipeserve``, ``triton`` and ``echo``, a bare grpc.aio server on the
servicer tritonclient generates whose ModelInfer echoes (``serving/grpc_echo.py``; it also answers
the metadata calls perf_analyzer makes at start). A count window holds ``--requests`` requests
(default 500 x ``--seconds``); a point whose windows do not settle within perf_analyzer's 10 % is
measured again at 25 % (``--relaxed-stability``), and the output names those points.

Every point runs against a freshly started server (started and stopped here, each in a session of
its own, bound to 127.0.0.1; nothing is left running), after a warm-up; systems are interleaved
within each round (round r: for each connection count, each system) and the median of the rounds is
reported, with each system's ratio to Triton and fraction of the bare echo at the same load.

    bash benchmarks/serving_peers.sh                     # once: Triton, perf_analyzer, LitServe, Ray Serve
    .venv/bin/python benchmarks/serving.py http          # 3 rounds x 10 s at 1, 8, 64 connections
    .venv/bin/python benchmarks/serving.py grpc          # 3 rounds, concurrency 1 and 8
    .venv/bin/python benchmarks/serving.py http --rounds 1 --seconds 1 --connections 8   # a smoke run

The printed output and the raw results go to ``benchmarks/results/serving_{http,grpc}.{txt,json}``;
a run with fewer rounds, shorter points or fewer systems or loads than the defaults writes
``*.tmp`` files there instead (ignored by git), so a smoke run never replaces measured figures.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine

HERE = Path(__file__).resolve().parent
APPS = HERE / "serving"
PEERS = HERE / ".peers" / "serving"
RESULTS = HERE / "results"
MODEL = "identity"
BODY = '{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"FP32","data":[1]}]}'
HTTP_SYSTEMS = ("pipeserve", "triton", "litserve", "litserve-batch", "ray", "echo")
GRPC_SYSTEMS = ("pipeserve", "triton", "echo")
DEFAULT_LOAD = {"http": (1, 8, 64), "grpc": (1, 8)}
FULL_ROUNDS, FULL_SECONDS = 3, 10
FIGURES = ("throughput", "p50_ms", "p99_ms")


# ------------------------------------------------------------------------------------------------
# Servers


@dataclass(frozen=True)
class Peers:
    """Where serving_peers.sh put the peers."""

    root: Path

    @property
    def tritonserver(self) -> Path:
        return self.root / "triton" / "bin" / "tritonserver"

    @property
    def perf_analyzer(self) -> Path:
        return self.root / "pa" / "bin" / "perf_analyzer"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def missing(self, system: str, mode: str) -> str | None:
        """Why ``system`` cannot run here, or None."""
        needs: list[Path] = []
        if system == "triton":
            needs.append(self.tritonserver)
        if system.startswith("litserve") or system == "ray":
            needs.append(self.python)
        if mode == "grpc":
            needs.append(self.perf_analyzer)
        absent = [str(p) for p in needs if not os.access(p, os.X_OK)]
        if mode == "http" and shutil.which("wrk") is None:
            absent.append("wrk")
        return f"{', '.join(absent)} not found (run benchmarks/serving_peers.sh)" if absent else None


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this script dies (Linux), so no server outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class Service:
    """One server under test: its process tree runs in a session of its own."""

    started: ClassVar[list[Service]] = []  # every one, for the check at the end

    def __init__(self, system: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.system = system
        self.log = log
        self.known: dict[int, int] = {}
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe: this script starts no threads
        )
        Service.started.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        self._log_file.flush()
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def members(self) -> dict[int, int]:
        """Every live process of this server (its session, and its descendants): pid -> start time."""
        stats = {pid: st for pid in _all_pids() if (st := _proc_stat(pid)) is not None}
        found = {pid for pid, st in stats.items() if st[1] == self.proc.pid}
        if self.proc.pid in stats:
            found.add(self.proc.pid)
        grew = True
        while grew:
            more = {pid for pid, st in stats.items() if st[0] in found and pid not in found}
            found |= more
            grew = bool(more)
        return {pid: stats[pid][2] for pid in found}

    def stop(self, grace: float = 30.0) -> list[int]:
        """SIGTERM to the server, then its group; SIGKILL whatever is left. Returns pids that survived."""
        members = self.members()
        self.known = members
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            members.update(self.members())
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._survivors(members):
                time.sleep(0.05)
            if not self._survivors(members):
                break
        for pid in self._survivors(members):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5.0)
        self._log_file.close()
        time.sleep(0.2)
        return self._survivors(members)

    def leftovers(self) -> list[int]:
        """Processes of this server still alive (those seen at its stop, and any in its session)."""
        if self.alive():
            return [self.proc.pid]
        return self._survivors({**self.known, **self.members()})

    @staticmethod
    def _survivors(members: dict[int, int]) -> list[int]:
        alive = []
        for pid, started in members.items():
            st = _proc_stat(pid)
            if st is not None and st[2] == started:
                alive.append(pid)
        return alive


@dataclass
class Endpoint:
    """A started server and where to reach it."""

    service: Service
    http_port: int = 0
    grpc_port: int = 0

    @property
    def infer_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL}/infer"


def start(system: str, mode: str, peers: Peers, workdir: Path, tag: str) -> Endpoint:
    """Start ``system`` on free loopback ports (its log in ``workdir``)."""
    http_port, grpc_port = free_ports(2)
    log = workdir / f"{tag}.log"
    if system == "pipeserve":
        argv = [sys.executable, "-m", "pipeserve", "serve", str(APPS / "pipeserve" / f"{MODEL}.toml")]
        argv += ["--port", str(http_port), "--grpc-port", str(grpc_port)]
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
        return Endpoint(Service(system, argv, log, env), http_port, grpc_port)
    if system == "triton":
        repository = workdir / "triton-models"  # a copy: the Python backend writes __pycache__ beside model.py
        if not repository.exists():
            shutil.copytree(APPS / "triton", repository)
        argv = [
            str(peers.tritonserver),
            f"--model-repository={repository}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
        ]
        return Endpoint(Service(system, argv, log), http_port, grpc_port)
    if system in ("litserve", "litserve-batch"):
        argv = [str(peers.python), str(APPS / "litserve_app.py"), "--port", str(http_port)]
        if system == "litserve-batch":
            argv += ["--batch", "8"]
        return Endpoint(Service(system, argv, log), http_port)
    if system == "ray":
        temp = workdir / f"ray-{tag}"
        argv = [str(peers.python), str(APPS / "ray_app.py"), "--port", str(http_port), "--temp-dir", str(temp)]
        return Endpoint(Service(system, argv, log, {"RAY_USAGE_STATS_ENABLED": "0"}), http_port)
    if system == "echo" and mode == "http":
        argv = [sys.executable, str(APPS / "asgi_echo.py"), "--port", str(http_port)]
        return Endpoint(Service(system, argv, log), http_port)
    if system == "echo" and mode == "grpc":
        argv = [sys.executable, str(APPS / "grpc_echo.py"), "--port", str(grpc_port)]
        return Endpoint(Service(system, argv, log), grpc_port=grpc_port)
    raise ValueError(system)


def http_infer_ok(url: str, echo: bool) -> bool:
    """One POST of the body: 200 with OUTPUT0 = [1] (or the body itself, for the echo)."""
    request = urllib.request.Request(url, BODY.encode(), {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status != 200:
                return False
            payload: bytes = response.read()
    except (OSError, urllib.error.URLError):
        return False
    if echo:
        return payload == BODY.encode()
    try:
        output = json.loads(payload)["outputs"][0]
        return bool(output["name"] == "OUTPUT0" and [float(v) for v in output["data"]] == [1.0])
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def grpc_infer_ok(port: int) -> bool:
    """One ModelInfer of FP32 [1, 1] = 1.0: OUTPUT0 comes back with the same bytes."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    raw = np.ones((1, 1), np.float32).tobytes()
    request = service_pb2.ModelInferRequest(
        model_name=MODEL,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=[1, 1])],
        raw_input_contents=[raw],
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
    except grpc.RpcError:
        return False
    return bool(response.outputs and response.outputs[0].name == "OUTPUT0" and response.raw_output_contents[0] == raw)


def wait_ready(endpoint: Endpoint, mode: str, timeout: float) -> None:
    """Poll with a real inference until it answers right; raise with the log's tail if it never does."""
    system = endpoint.service.system

    def check() -> bool:
        if mode == "http":
            return http_infer_ok(endpoint.infer_url, echo=system == "echo")
        return grpc_infer_ok(endpoint.grpc_port)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not endpoint.service.alive():
            raise RuntimeError(f"{system} exited with {endpoint.service.proc.returncode}:\n{endpoint.service.tail()}")
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{system} not ready within {timeout:.0f} s:\n{endpoint.service.tail()}")


@contextlib.contextmanager
def serving(system: str, mode: str, args: argparse.Namespace, workdir: Path, tag: str) -> Iterator[Endpoint]:
    endpoint = start(system, mode, args.peer_paths, workdir, tag)
    try:
        wait_ready(endpoint, mode, args.startup_timeout)
        if system == "triton" and "tritonserver" not in args.versions:
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{endpoint.http_port}/v2"
                with urllib.request.urlopen(url, timeout=5) as response:
                    args.versions["tritonserver"] = json.loads(response.read())["version"]
        yield endpoint
    finally:
        left = endpoint.service.stop()
        if left:
            print(f"warning: {system} left processes {left} that would not die", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Load generators


def run_wrk(url: str, connections: int, seconds: int) -> dict[str, Any]:
    """wrk -t1 -cN -dS with serving/post.lua; the figures of its done() line."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(APPS / "post.lua"), url]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_BODY": BODY},
        timeout=seconds + 60,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            raw: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
            break
    else:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    ok = raw["requests"] - raw["status_errors"]
    seconds_run = raw["duration_us"] / 1e6
    return {
        **raw,
        "ok": ok,
        "errors": raw["status_errors"] + socket_errors,
        "seconds": seconds_run,
        "throughput": ok / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def run_perf_analyzer(
    pa: Path, port: int, concurrency: int, args: argparse.Namespace, csv_path: Path
) -> dict[str, Any]:
    """perf_analyzer -i grpc at one concurrency, count windows; infer/s and p50/p99 from its CSV.

    perf_analyzer reports only once its last three windows agree within ``-s`` percent. On a shared
    machine that can fail at its default (10); the point is then measured again, once, at
    ``--relaxed-stability``, and the run records which threshold it took.
    """
    thresholds = [args.stability]
    if args.relaxed_stability > args.stability:
        thresholds.append(args.relaxed_stability)
    failure = ""
    for threshold in thresholds:
        csv_path.unlink(missing_ok=True)
        argv = [
            str(pa),
            "-m",
            MODEL,
            "-u",
            f"127.0.0.1:{port}",
            "-i",
            "grpc",
            "-b",
            "1",
            "--concurrency-range",
            f"{concurrency}:{concurrency}",
            "--measurement-mode",
            "count_windows",
            "--measurement-request-count",
            str(args.requests),
            "--max-trials",
            str(args.max_trials),
            "-s",
            f"{threshold:g}",
            "-f",
            str(csv_path),
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.pa_timeout, check=False)
        if out.returncode == 0 and csv_path.exists():
            with csv_path.open() as f:
                row = next(csv.DictReader(f))
            count = 0
            for line in out.stdout.splitlines():
                if line.strip().startswith("Request count:"):
                    count = int(line.split(":")[1])
                    break
            return {
                "requests": count,
                "stability_pct": threshold,
                "throughput": float(row["Inferences/Second"]),
                "p50_ms": float(row["p50 latency"]) / 1000,
                "p99_ms": float(row["p99 latency"]) / 1000,
                "errors": 0,
            }
        text = (out.stdout + out.stderr).strip().splitlines()
        failure = f"perf_analyzer failed ({out.returncode}, -s {threshold:g}): " + " | ".join(text[-3:])
        if "stable measurement" not in out.stdout + out.stderr:
            break  # not a matter of noise: do not retry
        print(f"  {failure}", file=sys.stderr)
    raise RuntimeError(failure)


# ------------------------------------------------------------------------------------------------
# The benchmark


def measure(system: str, load: int, mode: str, args: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    with serving(system, mode, args, workdir, tag) as endpoint:
        if mode == "http":
            if args.warmup > 0:
                run_wrk(endpoint.infer_url, load, args.warmup)
            return run_wrk(endpoint.infer_url, load, args.seconds)
        return run_perf_analyzer(args.peer_paths.perf_analyzer, endpoint.grpc_port, load, args, workdir / f"{tag}.csv")


def summarise(
    runs: list[dict[str, Any]], systems: Sequence[str], loads: Sequence[int], mode: str
) -> list[dict[str, Any]]:
    """One row per (load, system): medians over the rounds that succeeded, ratios to Triton and echo."""
    medians: dict[tuple[str, int], dict[str, Any]] = {}
    for system in systems:
        for load in loads:
            mine = [r for r in runs if r["system"] == system and r["load"] == load]
            good = [r for r in mine if "error" not in r]
            medians[(system, load)] = {
                "rounds": len(good),
                "failed": len(mine) - len(good),
                "errors": sum(r.get("errors", 0) for r in good),
                **{k: statistics.median(r[k] for r in good) if good else None for k in FIGURES},
            }
    rows = []
    for load in loads:
        for system in systems:
            m = medians[(system, load)]
            triton = medians.get(("triton", load), {}).get("throughput")
            echo = medians.get(("echo", load), {}).get("throughput")
            rate = m["throughput"]
            row: dict[str, Any] = {
                "connections" if mode == "http" else "concurrency": load,
                "system": system,
                "req/s" if mode == "http" else "infer/s": rate if rate is not None else "failed",
                "p50 ms": m["p50_ms"] if rate is not None else "-",
                "p99 ms": m["p99_ms"] if rate is not None else "-",
                "vs triton": f"{rate / triton:.2f}x" if rate and triton else "-",
                "of echo": f"{rate / echo:.3f}" if rate and echo else "-",
            }
            if mode == "http":
                row["errors"] = m["errors"]
            if m["failed"]:
                row["failed rounds"] = m["failed"]
            rows.append(row)
    if any("failed rounds" in r for r in rows):
        for r in rows:
            r.setdefault("failed rounds", 0)
    return rows


def versions(mode: str, peers: Peers) -> dict[str, str]:
    found: dict[str, str] = {}
    import pipeserve

    found["pipeserve"] = pipeserve.__version__
    for name in ("uvicorn", "uvloop", "httptools", "grpcio", "tritonclient", "protobuf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    if os.access(peers.python, os.X_OK):
        code = "import importlib.metadata as m; print(m.version('litserve'), m.version('ray'))"
        out = subprocess.run([str(peers.python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
        if out.returncode == 0:
            found["litserve"], found["ray"] = out.stdout.split()
    if mode == "http" and shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        found["wrk"] = (out.stdout or out.stderr).split("[")[0].replace("wrk", "").strip()
    if mode == "grpc" and os.access(peers.perf_analyzer, os.X_OK):
        out = subprocess.run(
            [str(peers.perf_analyzer), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        found["perf_analyzer"] = (out.stdout + out.stderr).strip().replace("Perf Analyzer Version ", "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["http", "grpc"])
    parser.add_argument("--rounds", type=int, default=FULL_ROUNDS)
    parser.add_argument("--seconds", type=int, default=FULL_SECONDS, help="http: measured seconds per point (wrk -d)")
    parser.add_argument("--warmup", type=int, default=2, help="http: seconds of load before each measurement")
    parser.add_argument("--connections", help="http: wrk connections (default 1,8,64); grpc: concurrency (default 1,8)")
    parser.add_argument("--systems", help=f"http: {','.join(HTTP_SYSTEMS)}; grpc: {','.join(GRPC_SYSTEMS)}")
    parser.add_argument(
        "--requests", type=int, help="grpc: requests per perf_analyzer count window (default 500 x --seconds)"
    )
    parser.add_argument("--max-trials", type=int, default=10, help="grpc: perf_analyzer's windows per point, at most")
    parser.add_argument("--stability", type=float, default=10.0, help="grpc: perf_analyzer's -s, in percent")
    parser.add_argument(
        "--relaxed-stability", type=float, default=25.0, help="grpc: -s for one retry of a point that did not settle"
    )
    parser.add_argument("--pa-timeout", type=float, default=300.0, help="grpc: seconds one perf_analyzer run may take")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds a server may take to be ready")
    parser.add_argument("--peers", default=str(PEERS), help="where serving_peers.sh installed the peers")
    parser.add_argument("--out", help="the raw results' JSON file (default: benchmarks/results/serving_MODE.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (their folder is printed)")
    args = parser.parse_args()
    mode: str = args.mode
    from pipeserve.bench import format_table

    every = HTTP_SYSTEMS if mode == "http" else GRPC_SYSTEMS
    systems = [s.strip() for s in args.systems.split(",")] if args.systems else list(every)
    unknown = [s for s in systems if s not in every]
    if unknown:
        parser.error(f"unknown systems for {mode}: {unknown} (choose from {', '.join(every)})")
    loads = [int(c) for c in args.connections.split(",")] if args.connections else list(DEFAULT_LOAD[mode])
    if args.requests is None:
        args.requests = 500 * args.seconds
    args.peer_paths = Peers(Path(args.peers))
    args.versions = {}
    skipped = {s: why for s in systems if (why := args.peer_paths.missing(s, mode))}
    for system, why in skipped.items():
        print(f"skipping {system}: {why}", file=sys.stderr)
    systems = [s for s in systems if s not in skipped]
    if not systems:
        sys.exit("nothing to measure")

    full = (
        args.rounds >= FULL_ROUNDS
        and args.seconds >= FULL_SECONDS
        and set(systems) == set(every)
        and set(loads) >= set(DEFAULT_LOAD[mode])
    )
    out_json = Path(args.out) if args.out else RESULTS / (f"serving_{mode}.json" + ("" if full else ".tmp"))
    out_txt = out_json.with_name(out_json.name.replace(".json", ".txt"))

    workdir = Path(tempfile.mkdtemp(prefix="psbench-"))
    runs: list[dict[str, Any]] = []
    began = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every server is stopped
    try:
        for round_ in range(1, args.rounds + 1):
            for load in loads:
                for system in systems:
                    tag = f"{system}-{load}-r{round_}"
                    point_began = time.monotonic()
                    try:
                        result = measure(system, load, mode, args, workdir, tag)
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        result = {"error": str(exc)[-2000:]}
                        print(f"round {round_}: {system:>14} {load:>3}: FAILED {str(exc)[-600:]}", file=sys.stderr)
                    else:
                        print(
                            f"round {round_}: {system:>14} {load:>3} {'conns' if mode == 'http' else 'conc.'} "
                            f"{result['throughput']:>10,.0f} /s  p50 {result['p50_ms']:.3f} ms  "
                            f"p99 {result['p99_ms']:.3f} ms  errors {result.get('errors', 0)}",
                            file=sys.stderr,
                        )
                    wall = round(time.monotonic() - point_began, 1)
                    runs.append({"round": round_, "system": system, "load": load, "wall_s": wall, **result})
    finally:
        left = sorted({pid for service in Service.started for pid in service.leftovers()})
        if left:
            print(f"warning: server processes still running: {left}", file=sys.stderr)
        else:
            print(f"all {len(Service.started)} servers stopped, none left running (checked /proc)", file=sys.stderr)
        if args.keep_logs:
            print(f"server logs: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began

    rows = summarise(runs, systems, loads, mode)
    info = {**machine(), **versions(mode, args.peer_paths), **args.versions}
    if mode == "http":
        how = (
            f"wrk -t1 -cN, POST of one FP32 as Triton JSON; {args.rounds} rounds x {args.seconds} s "
            f"(after {args.warmup} s warm-up) per point, fresh server per point, median of rounds; "
            "req/s counts 2xx responses only"
        )
    else:
        how = (
            f"perf_analyzer -i grpc, count_windows of {args.requests} requests (-s {args.stability:g}, "
            f"retried at -s {args.relaxed_stability:g} if unsettled; at most {args.max_trials} windows), "
            "concurrency N, unary ModelInfer FP32 [1,1]; "
            f"{args.rounds} rounds, fresh server per point, median of rounds"
        )
    lines = [str(info), f"load: {how}"]
    if skipped:
        lines.append("not measured: " + "; ".join(f"{s} ({why})" for s, why in skipped.items()))
    lines.append(format_table(rows))
    relaxed = [r for r in runs if r.get("stability_pct", args.stability) > args.stability]
    if relaxed:
        points = ", ".join(f"{r['system']}@{r['load']} r{r['round']}" for r in relaxed)
        lines.append(f"settled only at -s {args.relaxed_stability:g}: {points}")
    text = "\n".join(lines)
    print(text)

    RESULTS.mkdir(exist_ok=True)
    raw = {
        "benchmark": f"serving_{mode}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "loads": loads,
            "systems": systems,
            "requests_per_window": args.requests if mode == "grpc" else None,
            "stability_pct": [args.stability, args.relaxed_stability] if mode == "grpc" else None,
            "max_trials": args.max_trials if mode == "grpc" else None,
            "body": BODY,
            "load_generator": how,
        },
        "skipped": skipped,
        "elapsed_s": round(elapsed, 1),
        "runs": runs,
        "rows": rows,
    }
    out_json.write_text(json.dumps(raw, indent=1) + "\n")
    out_txt.write_text(text + "\n")
    print(f"raw results: {out_json}; table: {out_txt} ({elapsed:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
