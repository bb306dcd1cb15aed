"""Shared helpers for the benchmarks: fresh-process workers, interleaved repeats, medians.

Every figure is measured in a fresh Python process (so one system's threads or allocator state
never affect another's), systems are interleaved within each repeat (so drift on a shared
machine hits them alike), and the median of the repeats is reported.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / "benchmarks" / ".peers" / "bin" / "python"
OCR_PAGES = ROOT / "src" / "pipeserve" / "examples" / "ocr" / "images"


def ocr_pages() -> list[bytes]:
    """The bundled OCR pages (JPEG bytes), in name order: every OCR benchmark's load."""
    return [p.read_bytes() for p in sorted(OCR_PAGES.glob("*.jpg"))]


def document_pages(count: int = 12) -> list[bytes]:
    """``count`` held-out generated documents (JPEG bytes, quality 90, 0.5 to 2 megapixels each;
    letters, prose, receipts, tables, a turned line, mixed sizes in turn), other seeds than the
    bundled pages: ``pipeserve.examples.ocr.documents.benchmark_pages``. Not the default load of
    any benchmark; for a run on unseen, larger pages."""
    from pipeserve.examples.ocr.documents import benchmark_pages

    return [page.jpeg(90) for page in benchmark_pages(count)]


def run_worker(
    python: str,
    script: Path,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Run ``script worker args`` in a fresh process; return the JSON it prints last.

    Past ``timeout`` seconds (or when this process is interrupted) the worker gets SIGTERM and up
    to a minute to clean up (a worker that starts servers stops them on SIGTERM, see
    :func:`exit_on_sigterm`), then SIGKILL; a timeout raises ``RuntimeError``."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), full_env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [python, str(script), "worker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException as exc:
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RuntimeError(f"worker {args} ran past {timeout:.0f} s and was stopped") from None
        raise
    if process.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread, so that a worker's ``finally`` blocks
    and context managers (servers it started) run when :func:`run_worker` stops it."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def median_of(runs: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """The first run's other fields, with the median of ``keys`` over all runs."""
    merged = dict(runs[0])
    for key in keys:
        merged[key] = statistics.median(r[key] for r in runs)
    merged["runs"] = len(runs)
    return merged


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    versions = {"python": platform.python_version()}
    for name in ("numpy", "onnxruntime"):
        try:
            module = __import__(name)
            versions[name] = module.__version__
        except ImportError:
            pass
    try:
        peer = subprocess.run(
            [str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('omniback'))"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if peer.returncode == 0:
            versions["omniback"] = peer.stdout.strip()
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), **versions}


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the last line of its output."""
    sys.stdout.write(json.dumps(result) + "\n")
