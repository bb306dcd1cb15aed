"""The command line and the load generator."""

import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pipeserve.bench import format_table, measure_ideal, percentile, run_closed_loop, run_open_loop
from pipeserve.cli import main


def test_percentile_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == pytest.approx(2.5)
    assert percentile([], 0.5) != percentile([], 0.5)  # nan


def test_closed_loop_counts_successes_and_errors_separately() -> None:
    calls = []
    lock = threading.Lock()

    def call(item: dict[str, Any]) -> None:
        with lock:
            calls.append(item["data"])
        if item["data"] % 3 == 0:
            raise ValueError("every third")

    result = run_closed_loop(call, lambda i: {"data": i}, clients=3, seconds=0.2, warmup=0.05)
    total = result.completed + result.errors
    assert 0 < total <= len(calls)
    assert result.errors > 0 and result.first_error == "ValueError: every third"
    summary = result.summary()
    assert summary["requests"] == result.completed and summary["p50_ms"] <= summary["p99_ms"]


def test_open_loop_sends_at_the_rate() -> None:
    def submit(item: dict[str, Any]) -> "Future[Any]":
        future: Future[Any] = Future()
        future.set_result(item)
        return future

    result = run_open_loop(submit, lambda i: {"data": i}, rate=200, seconds=0.25)
    assert result.completed == 50 and result.errors == 0


def test_measure_ideal_reports_items_per_second_per_batch_size() -> None:
    rates = measure_ideal(lambda batch: None, threads=2, batch_sizes=(1, 4), seconds=0.05)
    assert set(rates) == {1, 4} and all(rate > 0 for rate in rates.values())


def test_format_table_aligns_columns() -> None:
    text = format_table([{"a": 1, "bb": 2.5}, {"a": 10, "bb": 1234.5}])
    lines = text.splitlines()
    assert lines[0] == "| a  | bb    |" and len({len(line) for line in lines}) == 1
    assert "1,234" in text or "1,235" in text


def test_cli_bench_runs_a_toml_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[node]\nbackend = "Identity"\ninstance_num = 2\n')
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.bin").write_bytes(b"abc")
    assert main(["bench", str(config), "--clients", "1,2", "--seconds", "0.2", "--input", str(inputs), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "| label" in out and "2 clients" in out and '"node"' in out


def test_cli_lists_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "Identity" in out and "swap" in out


def test_module_entry_point_reports_its_version() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeserve", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("pipeserve ")
