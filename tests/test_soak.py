"""The soak benchmark's short profile (issue 13): faults everywhere, every request accounted for.

``benchmarks/soak.py`` runs 10^6 requests (docs/benchmarks.md section 11); this runs the same code
on 20,000 requests from 16 threads, a worker process killed every 500 of its batches.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("numpy")

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def _load_soak() -> ModuleType:
    """benchmarks/soak.py as a module (benchmarks is no package; the file appends its own folder
    to sys.path for its backends, which the worker processes then import too)."""
    spec = importlib.util.spec_from_file_location("soak_benchmark", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    path = list(sys.path)
    try:
        soak = _load_soak()
        return dict(soak.run_soak(soak.Profile(requests=20_000, threads=16, kill_every=500)))
    finally:
        sys.path[:] = path  # the benchmarks folder is no place to import from for other tests


def test_every_request_ends_in_exactly_one_bucket_and_none_hangs(report: dict[str, Any]) -> None:
    buckets = report["buckets"]
    assert report["sent"] == 20_000
    assert report["lost"] == 0 and sum(buckets.values()) == report["sent"]
    assert buckets["hung"] == 0 and report["stuck_threads"] == 0
    assert buckets["wrong_result"] == 0 and buckets["unexpected"] == 0, report["unexpected_examples"]
    assert report["pending_after_close"] == 0
    assert report["load_seconds"] < 30


def test_the_faults_happened(report: dict[str, Any]) -> None:
    buckets, sent = report["buckets"], report["sent"]
    assert 0.08 * sent < buckets["backend_error"] < 0.11 * sent  # n % 10 == 7, less the cancelled and closed
    assert 0 < buckets["timeout"] <= 0.01 * sent  # n % 100 == 42
    assert buckets["cancelled"] > 0 and buckets["closed"] > 0
    assert report["worker_restarts"] > 0  # the worker processes died and came back
    assert all(report["kinds"][kind] > 0 for kind in ("call", "submit", "submit+cancel", "acall", "acall+cancel"))


def test_nothing_is_left_behind_after_close(report: dict[str, Any]) -> None:
    left = report["left_after_close"]
    assert left["pipeserve_threads"] == [] and left["extra_threads"] <= 0
    assert left["shm_blocks"] == [] and left["child_processes"] == []
    assert left["fds"] <= 0
    assert report["close_seconds"] <= report["profile"]["close_timeout"] + 5
    assert report["all_met"], report["targets"]
