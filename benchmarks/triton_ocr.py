"""The OCR service as a Triton user builds it, both ways, against ``pipeserve serve ocr``: the same
pages, the same load generator, all over HTTP.

Systems (each point from a fresh server process, bound to 127.0.0.1, started and stopped here):
  pipeserve      ``pipeserve serve ocr`` (HTTP only)
  triton-engine  tritonserver 2.51 (CPU), model ``rapidocr_engine``: one RapidOCR engine per
                 Python-backend instance (cores / instances intra-op threads each), dynamic batching,
                 the requests of a batch read in turn; ``--engine-instances`` sets the instance count
  triton-bls     tritonserver, model ``ocr_bls``: a BLS model doing RapidOCR's pre- and
                 post-processing and calling Python-backend models det, cls and rec (RapidOCR's ONNX
                 sessions, one thread each, dynamic batching across requests)
The model repository is benchmarks/triton_ocr/ (config.pbtxt files say the instance counts).

Load: ``pipeserve.bench.run_closed_loop`` over ``pipeserve.bench.remote.remote_call`` (one keep-alive
HTTP connection per client, the JPEG as a binary BYTES tensor) on src/pipeserve/examples/ocr/images;
1, 4 and 16 clients, the systems interleaved within each round, medians of the rounds. Before the
first round every system reads each page once and its texts are compared with RapidOCR's.

    python benchmarks/triton_ocr.py [--rounds 3] [--seconds 30] [--clients 1,4,16]
        [--systems pipeserve,triton-engine,triton-bls] [--triton DIR] [--engine-instances 2]

DIR is where get-triton.sh installed tritonserver, its models' venv holding onnxruntime and
rapidocr-onnxruntime. Without --triton the first usable of benchmarks/.peers/triton,
benchmarks/.peers/serving/triton (benchmarks/serving_peers.sh) and .venv/triton is taken; when none
is, the script prints the command that installs one. benchmarks/ocr.py (issue 12) starts its
servers with ``serving()`` here.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, emit, machine, ocr_pages, run_worker

REPOSITORY = ROOT / "benchmarks" / "triton_ocr"
ONNX_STAGE = REPOSITORY / "onnx_stage.py"  # the model.py of det, cls and rec alike
ONNX_STAGES = ("det", "cls", "rec")
DEFAULT_TRITON = ROOT / "benchmarks" / ".peers" / "triton"
TRITON_CANDIDATES = (DEFAULT_TRITON, ROOT / "benchmarks" / ".peers" / "serving" / "triton", ROOT / ".venv" / "triton")
MODEL_PACKAGES = ("onnxruntime", "rapidocr_onnxruntime")  # what the models import in Triton's venv
GET_TRITON = ROOT.parent / "shared" / "tools" / "get-triton.sh"
SYSTEMS = ("pipeserve", "triton-engine", "triton-bls")
MODELS = {  # system -> (model the client calls, models the server loads)
    "pipeserve": ("ocr", ()),
    "triton-engine": ("rapidocr_engine", ("rapidocr_engine",)),
    "triton-bls": ("ocr_bls", ("ocr_bls", "det", "cls", "rec")),
}
WARMUP_S = 3.0
START_LIMIT_S = 180.0  # a server must be ready within this
MAX_REQUESTS = 100_000  # per load run; far above what a run can do, a bound in count beside the time


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- servers -----------------------------------------------------------------------------------


class Server:
    """A server in its own process group under ``timeout`` (so that it dies by itself even if this
    process is killed), on 127.0.0.1 only; ``stop()`` ends the whole group and checks it is gone."""

    def __init__(self, system: str, triton: Path, engine_instances: int, lifetime_s: float) -> None:
        self.system = system
        self.model = MODELS[system][0]
        self.port = _free_port()
        self.log = tempfile.TemporaryFile("w+")
        self.scratch: Path | None = None
        bound = ["timeout", "--signal=TERM", "--kill-after=20", str(int(lifetime_s))]
        env = dict(os.environ)
        if system == "pipeserve":
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
            command = [sys.executable, "-m", "pipeserve", "serve", "ocr", "--host", "127.0.0.1"]
            command += ["--port", str(self.port), "--grpc-port", "-1"]
        else:
            for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the models run in Triton's own venv
                env.pop(key, None)
            self.scratch = Path(tempfile.mkdtemp(prefix="triton_ocr_"))
            repository = _repository(self.scratch, MODELS[system][1], engine_instances)
            command = [str(triton / "bin" / "tritonserver"), f"--model-repository={repository}"]
            command += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in MODELS[system][1])]
            command += ["--http-address=127.0.0.1", f"--http-port={self.port}", "--allow-grpc=false"]
            command += ["--allow-metrics=false", "--exit-timeout-secs=10", "--log-info=false"]
        self.process = subprocess.Popen(
            bound + command, stdout=self.log, stderr=self.log, text=True, env=env, start_new_session=True
        )
        self.group = self.process.pid  # the session leader's pid is the group's id
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        end = time.monotonic() + START_LIMIT_S
        while time.monotonic() < end:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{self.system}: the server exited at start:\n{self.log.read()[-3000:]}")
            try:
                if _get(self.port, f"/v2/models/{self.model}/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.system}: not ready after {START_LIMIT_S:.0f} s")

    def version(self) -> str:
        status, body = _get(self.port, "/v2")
        return str(json.loads(body).get("version", "")) if status == 200 else ""

    def batching(self) -> dict[str, float]:
        """Items per execution of each model since start (the server's statistics extension)."""
        status, body = _get(self.port, "/v2/models/stats")
        if status != 200:
            return {}
        return {
            str(m["name"]): round(int(m["inference_count"]) / int(m["execution_count"]), 2)
            for m in json.loads(body).get("model_stats", [])
            if int(m.get("execution_count", 0))
        }

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 30 s; then wait until no process of the group is left."""
        _signal_group(self.group, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            _signal_group(self.group, signal.SIGKILL)
            self.process.wait(10)
        end = time.monotonic() + 30
        while _group_alive(self.group) and time.monotonic() < end:
            time.sleep(0.1)
        if _group_alive(self.group):  # a straggler (a Python-backend stub): kill it
            _signal_group(self.group, signal.SIGKILL)
            time.sleep(1)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.log.close()


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _repository(scratch: Path, models: Sequence[str], engine_instances: int) -> Path:
    """A copy of the models this system needs, the engine's instance count set to ``engine_instances``."""
    repository = scratch / "models"
    for model in models:
        shutil.copytree(REPOSITORY / model, repository / model, ignore=shutil.ignore_patterns("__pycache__"))
        if model in ONNX_STAGES:
            (repository / model / "1").mkdir(exist_ok=True)
            shutil.copy(ONNX_STAGE, repository / model / "1" / "model.py")
    config = repository / "rapidocr_engine" / "config.pbtxt"
    if config.exists():
        text, count = re.subn(r"count: \d+", f"count: {engine_instances}", config.read_text())
        if count != 1:
            raise RuntimeError(f"expected one instance count in {config}, found {count}")
        config.write_text(text)
    return repository


@contextlib.contextmanager
def serving(system: str, triton: Path, engine_instances: int, lifetime_s: float) -> Iterator[tuple[Server, Any]]:
    """A fresh server of ``system`` and an HTTP client of its OCR model (one keep-alive connection
    per calling thread, ``pipeserve.bench.remote.remote_call``); both closed on the way out, the
    server's whole process group ended (``Server.stop``)."""
    from pipeserve.bench.remote import remote_call

    server = Server(system, triton, engine_instances, lifetime_s)
    try:
        call = remote_call(f"http://127.0.0.1:{server.port}", server.model)
        try:
            yield server, call
        finally:
            call.close()
    finally:
        server.stop()


def _ps_groups(groups: set[int]) -> list[str]:
    """``ps`` lines of every process still in one of ``groups``."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True, check=True, timeout=30)
    left = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and int(parts[1]) in groups:
            left.append(line.strip())
    return left


# --- workers (each in a fresh process) ---------------------------------------------------------


def decode(body: bytes) -> list[dict[str, Any]]:
    """The lines in an infer response (JSON outputs: the clients ask for no binary output)."""
    from pipeserve import oip

    response = oip.http_codec.decode_response(body, None)
    value = response.outputs[0].data.reshape(-1)[0]
    return list(json.loads(value.decode("utf-8") if isinstance(value, bytes) else value))


def check_worker(system: str, triton: Path, engine_instances: int) -> dict[str, Any]:
    """Each page once through a fresh server: the lines it returns."""
    with serving(system, triton, engine_instances, lifetime_s=START_LIMIT_S + 300) as (server, call):
        pages = [decode(call({"data": page})) for page in ocr_pages()]
        version = server.version()
    return {"system": system, "pages": pages, "version": version, "group": server.group}


def load_worker(system: str, clients: int, seconds: float, triton: Path, engine_instances: int) -> dict[str, Any]:
    """``clients`` closed-loop clients against a fresh server for ``seconds`` after the warm-up."""
    from pipeserve.bench import run_closed_loop

    pages = ocr_pages()
    lifetime_s = START_LIMIT_S + WARMUP_S + seconds + 120
    with serving(system, triton, engine_instances, lifetime_s) as (server, call):
        sent = [0]

        def bounded(item: dict[str, Any]) -> Any:
            sent[0] += 1  # approximate across threads; only a safety bound
            if sent[0] > MAX_REQUESTS:
                time.sleep(0.1)
                raise RuntimeError(f"more than {MAX_REQUESTS} requests")
            return call(item)

        result = run_closed_loop(
            bounded, lambda i: {"data": pages[i % len(pages)]}, clients=clients, seconds=seconds, warmup=WARMUP_S
        )
        batching, version = server.batching(), server.version()
    summary = result.summary()
    return {
        "system": system,
        "clients": clients,
        "images_s": result.throughput,  # unrounded: the summary's one decimal is too coarse here
        "p50_ms": summary["p50_ms"],
        "p90_ms": summary["p90_ms"],
        "p99_ms": summary["p99_ms"],
        "requests": summary["requests"],
        "errors": summary["errors"],
        "first_error": result.first_error,
        "batching": batching,
        "version": version,
        "group": server.group,
    }


def reference_worker() -> dict[str, Any]:
    """RapidOCR's own reading of each page (its default engine), as pipeserve's lines."""
    from rapidocr_onnxruntime import RapidOCR

    from pipeserve.examples.ocr.samples import from_rapidocr

    engine = RapidOCR()
    return {"pages": [from_rapidocr(engine(page)) for page in ocr_pages()]}


# --- the driver --------------------------------------------------------------------------------


def _label(system: str, instances: int, several: bool) -> str:
    return f"{system} x{instances}" if system == "triton-engine" and several else system


def triton_problem(triton: Path) -> str:
    """Why ``triton`` cannot serve the OCR models ("" when it can): no tritonserver there, or its
    models' venv lacks what they import."""
    if not os.access(triton / "bin" / "tritonserver", os.X_OK):
        return f"no executable {triton / 'bin' / 'tritonserver'}"
    sites = list((triton / "venv" / "lib").glob("python3*/site-packages"))
    missing = [p for p in MODEL_PACKAGES if not any((site / p).is_dir() for site in sites)]
    if missing:
        return f"the models' venv {triton / 'venv'} lacks {', '.join(missing)}"
    return ""


def find_triton(explicit: Path | None) -> tuple[Path, str]:
    """The Triton installation to use and "", or (when none is usable) the first candidate and
    the text saying how to install one. ``explicit`` (--triton) is the only candidate when given,
    else ``TRITON_CANDIDATES`` in order. Symbolic links are kept (for the hint)."""
    candidates = [explicit] if explicit is not None else list(TRITON_CANDIDATES)
    paths = [Path(os.path.abspath(c)) for c in candidates]
    for path in paths:
        if not triton_problem(path):
            return path, ""
    hint = _install_hint(paths[0])
    if len(paths) > 1:
        hint += "\nAlso looked in: " + "; ".join(f"{p} ({triton_problem(p)})" for p in paths[1:])
    return paths[0], hint


def triton_versions(triton: Path) -> dict[str, str]:
    python = triton / "venv" / "bin" / "python"
    packages = ("onnxruntime", "rapidocr-onnxruntime", "numpy", "opencv-python")
    code = f"import importlib.metadata as m\nfor p in {packages!r}:\n"
    code += "    try: print(p, m.version(p))\n    except m.PackageNotFoundError: pass"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False, timeout=60)
    return {f"triton venv {line.split()[0]}": line.split()[1] for line in out.stdout.splitlines() if line.strip()}


def _install_hint(triton: Path) -> str:
    problem = triton_problem(triton)
    pins = ["numpy"]
    for package in ("onnxruntime", "rapidocr-onnxruntime"):
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    if problem.startswith("no executable"):
        lines = [
            f"tritonserver is not installed in {triton} ({problem}).",
            "Install it (CPU, Python backend, with a venv for the models; about a minute, 700 MB) with:",
            "",
            f"    bash {GET_TRITON} {triton} {' '.join(pins)}",
            "",
            "or point --triton at an existing installation.",
        ]
    else:
        lines = [
            f"tritonserver in {triton} cannot serve the OCR models: {problem}. Add them with:",
            "",
            f"    {triton / 'venv' / 'bin' / 'pip'} install {' '.join(pins)}",
            "",
            "or point --triton at another installation.",
        ]
    peers = ROOT / "benchmarks" / ".peers"
    if triton.is_relative_to(peers) and peers.is_symlink() and not peers.exists():
        lines.append(f"Note: {peers} is a broken symbolic link (to {os.readlink(peers)}); create its target first.")
    return "\n".join(lines)


def _compare(reference: list[list[dict[str, Any]]], pages: list[list[dict[str, Any]]]) -> dict[str, Any]:
    from pipeserve.examples.ocr.samples import compare

    same_pages = lines = same_text = same_box = 0
    for theirs, ours in zip(reference, pages, strict=True):
        counts = compare(ours, theirs)
        lines += counts["lines"]
        same_text += counts["same_text"]
        same_box += counts["same_box"]
        same_pages += len(ours) == len(theirs) and counts["same_text"] == counts["lines"]
    return {
        "pages same text": f"{same_pages}/{len(reference)}",
        "lines same text": f"{same_text}/{lines}",
        "boxes within 2 px": f"{same_box}/{lines}",
    }


def _worker(args: list[str]) -> dict[str, Any]:
    return run_worker(sys.executable, Path(__file__), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per point (after 3 s warm-up)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--triton", type=Path, help="where get-triton.sh installed Triton (default: see above)")
    parser.add_argument(
        "--engine-instances", default="2", help="instance counts of rapidocr_engine to compare, e.g. 1,2,4"
    )
    parser.add_argument("--no-check", action="store_true", help="skip comparing each system's texts with RapidOCR")
    args = parser.parse_args()
    from pipeserve.bench import format_table

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    clients = [int(c) for c in args.clients.split(",")]
    counts = [int(c) for c in args.engine_instances.split(",")]
    if not 0 < args.seconds <= 300 or args.rounds < 1 or min(clients) < 1 or min(counts) < 1:
        parser.error("need 0 < --seconds <= 300, --rounds >= 1, clients and instance counts >= 1")
    triton, hint = find_triton(args.triton)
    if any(s != "pipeserve" for s in systems) and hint:
        print(hint, file=sys.stderr)
        raise SystemExit(2)

    several = len(counts) > 1
    setups = [(s, n) for s in systems for n in (counts if s == "triton-engine" else counts[:1])]
    groups: set[int] = set()
    versions: dict[str, str] = {}
    started = time.monotonic()

    checks = []
    if not args.no_check:
        reference = _worker(["reference"])["pages"]
        for system, instances in setups:
            result = _worker(["check", system, str(triton), str(instances)])
            groups.add(result["group"])
            if system != "pipeserve" and result["version"]:
                versions["tritonserver"] = result["version"]
            checks.append({"system": _label(system, instances, several), **_compare(reference, result["pages"])})
            print(f"check: {checks[-1]}", file=sys.stderr)

    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for count in clients:
            order = setups if round_ % 2 == 0 else list(reversed(setups))
            for system, instances in order:
                worker_args = ["load", system, str(count), str(args.seconds), str(triton), str(instances)]
                begun = time.monotonic()
                result = _worker(worker_args)
                groups.add(result["group"])
                if system != "pipeserve" and result["version"]:
                    versions["tritonserver"] = result["version"]
                runs.setdefault((_label(system, instances, several), count), []).append(result)
                print(
                    f"round {round_ + 1}: {_label(system, instances, several):>16} {count:>2} clients "
                    f"{result['images_s']:.3f} img/s p50 {result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms"
                    + f" items/execution {result['batching']} ({time.monotonic() - begun:.0f} s with start and stop)"
                    + (f" errors {result['errors']} ({result['first_error']})" if result["errors"] else ""),
                    file=sys.stderr,
                )

    rows = []
    for count in clients:
        for system, instances in setups:
            label = _label(system, instances, several)
            points = runs[(label, count)]
            rows.append(
                {
                    "clients": count,
                    "system": label,
                    "images/s": round(statistics.median(p["images_s"] for p in points), 3),
                    "p50 ms": round(statistics.median(p["p50_ms"] for p in points)),
                    "p90 ms": round(statistics.median(p["p90_ms"] for p in points)),
                    "p99 ms": round(statistics.median(p["p99_ms"] for p in points)),
                    "p99/p50": f"{statistics.median(p['p99_ms'] / p['p50_ms'] for p in points if p['p50_ms']):.2f}",
                    "errors": sum(p["errors"] for p in points),
                    "rounds": len(points),
                }
            )
    left = _ps_groups(groups)
    info: dict[str, str] = dict(machine())
    if any(s != "pipeserve" for s in systems):
        info.update(versions)
        info.update(triton_versions(triton))
    print(info)
    if checks:
        print("Texts against RapidOCR (each page once, before the first round):")
        print(format_table(checks))
    print(
        f"{args.rounds} round(s) x {args.seconds:g} s per point (+{WARMUP_S:g} s warm-up), medians; "
        f"engine instances: {','.join(map(str, counts))}; wall {time.monotonic() - started:.0f} s"
    )
    print(format_table(rows))
    print(f"servers left running (ps, by process group): {'none' if not left else left}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "reference":
            emit(reference_worker())
        elif kind == "check":
            emit(check_worker(rest[0], Path(rest[1]), int(rest[2])))
        else:
            emit(load_worker(rest[0], int(rest[1]), float(rest[2]), Path(rest[3]), int(rest[4])))
    else:
        main()
