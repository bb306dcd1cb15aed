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
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, emit, machine, median_of, run_worker

PAGES = ROOT / "src" / "pipeserve" / "examples" / "ocr" / "images"
SYSTEMS = ("in-process", "http")


def _pages() -> list[bytes]:
    return [p.read_bytes() for p in sorted(PAGES.glob("*.jpg"))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    log = tempfile.TemporaryFile("w+")  # the server's log, read if it fails to start
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeserve", "serve", "ocr", "--port", str(port), "--grpc-port", "-1"],
        stdout=log,
        stderr=log,
        text=True,
        env=env,
        start_new_session=True,
    )
    import http.client

    end = time.monotonic() + 120
    while time.monotonic() < end:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                connection.close()
                return process
            connection.close()
        except OSError:
            pass
        time.sleep(0.2)
    _stop(process)
    raise RuntimeError("the server did not become ready in 120 s")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def worker(system: str, clients: int, seconds: float) -> dict[str, Any]:
    from pipeserve.bench import run_closed_loop

    pages = _pages()

    def make_item(index: int) -> dict[str, Any]:
        return {"data": pages[index % len(pages)]}

    if system == "in-process":
        from pipeserve.examples import ocr

        with ocr.pipeline() as pipe:
            result = run_closed_loop(pipe, make_item, clients=clients, seconds=seconds, warmup=3.0)
    else:
        from pipeserve.bench.remote import remote_call

        port = _free_port()
        server = _start_server(port)
        try:
            call = remote_call(f"http://127.0.0.1:{port}", "ocr")
            try:
                result = run_closed_loop(call, make_item, clients=clients, seconds=seconds, warmup=3.0)
            finally:
                call.close()
        finally:
            _stop(server)
    return {"system": system, **result.summary()}


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
