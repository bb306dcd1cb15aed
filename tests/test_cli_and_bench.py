"""The command line and the load generator."""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pipeserve.bench import LoadResult, format_table, measure_ideal, percentile, run_closed_loop, run_open_loop
from pipeserve.bench.loadgen import significant
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


def test_fixed_count_measures_exactly_n_requests() -> None:
    sent: list[int] = []
    lock = threading.Lock()

    def call(item: dict[str, Any]) -> None:
        with lock:
            sent.append(item["data"])
        time.sleep(0.002)

    result = run_closed_loop(call, lambda i: {"data": i}, clients=3, requests=25, warmup=0.0)
    assert sorted(sent) == list(range(25))  # no warm-up: the 25 measured ones are all that ran
    assert result.requested == 25 and result.mode == "requests"
    assert result.completed == 25 and result.errors == 0
    assert len(result.completions) == 25 and all(0 < t <= result.seconds for t in result.completions)
    assert result.throughput == pytest.approx(25 / result.seconds)
    assert 25 * 0.002 / 3 <= result.seconds < 5  # the wall time from the first send to the last completion
    assert result.summary()["throughput"] == significant(25 / result.seconds)


def test_fixed_count_counts_errors_among_the_n_and_skips_the_warm_up() -> None:
    calls = [0]
    lock = threading.Lock()

    def call(item: dict[str, Any]) -> None:
        with lock:
            calls[0] += 1
        time.sleep(0.001)
        if item["data"] % 4 == 0:
            raise ValueError("every fourth")

    result = run_closed_loop(call, lambda i: {"data": i}, clients=4, requests=20, warmup=0.05)
    assert calls[0] > 20  # the warm-up ran, unmeasured
    assert result.completed + result.errors == 20 and result.errors == 5  # tickets 0, 4, 8, 12, 16
    assert result.first_error == "ValueError: every fourth"
    assert result.throughput == pytest.approx(15 / result.seconds)
    with pytest.raises(ValueError, match="at least 1"):
        run_closed_loop(call, lambda i: {"data": i}, clients=2, requests=0)


def test_duration_mode_is_unchanged() -> None:
    result = run_closed_loop(lambda item: None, lambda i: {"data": i}, clients=2, seconds=0.1, warmup=0.0)
    assert result.requested is None and result.mode == "duration" and result.seconds == 0.1


def test_throughput_has_three_significant_digits() -> None:
    assert [significant(v) for v in (0.49731, 12.34, 1534.2, 99.96, 0.0)] == [0.497, 12.3, 1530.0, 100.0, 0.0]
    rows = []
    for completed, seconds in ((5, 10.06), (123, 10.0), (15342, 10.0), (20, 10.0)):
        result = LoadResult("x", 1, seconds, latencies=[0.01] * completed, completions=[1.0] * completed)
        rows.append(result.summary())
    assert [row["throughput"] for row in rows] == [0.497, 12.3, 1530.0, 2.0]
    cells = [line.split("|")[1].strip() for line in format_table(rows, ["throughput"]).splitlines()[2:]]
    assert cells == ["0.497", "12.3", "1,530", "2.00"]
    latencies = format_table([{"ms": 0.008}, {"ms": 0.0497}, {"ms": 12.345}, {"ms": 1234.567}])
    assert [line.split("|")[1].strip() for line in latencies.splitlines()[2:]] == ["0.008", "0.0497", "12.3", "1,235"]


def test_open_loop_sends_at_the_rate() -> None:
    def submit(item: dict[str, Any]) -> "Future[Any]":
        future: Future[Any] = Future()
        future.set_result(item)
        return future

    result = run_open_loop(submit, lambda i: {"data": i}, rate=200, seconds=0.25)
    assert result.completed == 50 and result.errors == 0
    counted = run_open_loop(submit, lambda i: {"data": i}, rate=300, requests=30)
    assert counted.completed == 30 and counted.requested == 30 and counted.seconds == pytest.approx(0.1)


def test_measure_ideal_reports_items_per_second_per_batch_size() -> None:
    rates = measure_ideal(lambda batch: None, threads=2, batch_sizes=(1, 4), seconds=0.05)
    assert set(rates) == {1, 4} and all(rate > 0 for rate in rates.values())


def test_format_table_aligns_columns() -> None:
    text = format_table([{"a": 1, "bb": 2.5}, {"a": 10, "bb": 1234.5}])
    lines = text.splitlines()
    assert lines[0] == "| a  | bb    |" and len({len(line) for line in lines}) == 1
    assert "1,234" in text or "1,235" in text
    assert "2.50" in text  # three significant digits below 100


def test_cli_bench_runs_a_toml_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[node]\nbackend = "Identity"\ninstance_num = 2\n')
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.bin").write_bytes(b"abc")
    assert main(["bench", str(config), "--clients", "1,2", "--seconds", "0.2", "--input", str(inputs), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "| label" in out and "2 clients" in out and '"node"' in out


def test_cli_bench_fixed_count_records_the_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[node]\nbackend = "Identity"\n')
    figures = tmp_path / "bench.json"
    argv = ["bench", str(config), "--clients", "1,3", "--requests", "12", "--json", str(figures)]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "clients" in line]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:5] == ["label", "clients", "requests", "errors", "seconds"]
    assert [line.split("|")[3].strip() for line in lines[1:]] == ["12", "12"]
    report = json.loads(figures.read_text())
    assert report["meta"]["mode"] == "requests" and report["meta"]["requests"] == 12
    assert report["meta"]["seconds"] is None
    assert [step["summary"]["requests"] for step in report["steps"]] == [12, 12]
    duration = tmp_path / "duration.json"
    assert main(["bench", str(config), "--clients", "1", "--seconds", "0.1", "--json", str(duration)]) == 0
    meta = json.loads(duration.read_text())["meta"]
    assert meta["mode"] == "duration" and meta["requests"] is None and meta["seconds"] == 0.1


def test_cli_bench_refuses_seconds_with_requests(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "x.toml", "--seconds", "2", "--requests", "10"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "x.toml", "--requests", "0"])


def test_cli_demo_passes_the_annotated_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    import pipeserve.bench.demo as scheduler_demo
    import pipeserve.examples.ocr.demo as ocr_demo

    monkeypatch.setattr(ocr_demo, "main", lambda seconds, annotated: calls.append(("ocr", seconds, annotated)))
    monkeypatch.setattr(scheduler_demo, "main", lambda seconds: calls.append(("scheduler", seconds)))
    assert main(["demo", "--annotated", "out/a.png"]) == 0
    assert main(["demo"]) == 0
    assert main(["demo", "--seconds", "3"]) == 0
    assert main(["demo", "--scheduler"]) == 0
    assert calls == [
        ("ocr", None, "out/a.png"),
        ("ocr", None, ".artifacts/ocr-annotated.png"),
        ("ocr", 3.0, ".artifacts/ocr-annotated.png"),
        ("scheduler", 10.0),
    ]


def test_cli_lists_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "Identity" in out and "swap" in out


def test_module_entry_point_reports_its_version() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeserve", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("pipeserve ")
