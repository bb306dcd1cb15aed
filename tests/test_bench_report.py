"""``pipeserve bench --json/--plot``: the figures as JSON and as a plot (pipeserve.bench.report)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeserve.bench import LoadResult
from pipeserve.bench.report import MAX_SAMPLES, MAX_WINDOWS, build_report, choose_window, write_json
from pipeserve.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _printed_rows(out: str) -> list[list[str]]:
    """The data rows of the table ``pipeserve bench`` printed, as cells."""
    lines = [line for line in out.splitlines() if line.startswith("|") and "clients" in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def _check_json(path: Path, printed: list[list[str]], target: str) -> dict[str, Any]:
    report = json.loads(path.read_text())
    assert report["meta"]["target"] == target and report["meta"]["load"] == "closed-loop"
    assert report["meta"]["cpu_count"] >= 1 and report["meta"]["pipeserve"] and report["meta"]["date"]
    assert [step["summary"]["label"] for step in report["steps"]] == [row[0] for row in printed]
    for step, row in zip(report["steps"], printed, strict=True):
        summary, windows, samples = step["summary"], step["windows"], step["samples"]
        assert summary["requests"] == int(row[2].replace(",", "")) > 0 and summary["errors"] == 0
        assert sum(windows["count"]) == summary["requests"]
        assert windows["t_s"] and windows["t_s"] == sorted(windows["t_s"])
        assert len({len(windows[key]) for key in ("t_s", "count", "p50_ms", "p99_ms")}) == 1
        assert samples["t_s"] and samples["t_s"] == sorted(samples["t_s"])
        assert len(samples["t_s"]) == len(samples["latency_ms"]) == -(-summary["requests"] // samples["stride"])
    return report


def test_bench_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    config = tmp_path / "p.toml"
    config.write_text('[node]\nbackend = "Identity"\ninstance_num = 2\n')
    figures, plot = tmp_path / "out" / "bench.json", tmp_path / "bench.png"
    argv = ["bench", str(config), "--clients", "1,2", "--seconds", "0.3", "--json", str(figures), "--plot", str(plot)]
    assert main(argv) == 0
    printed = _printed_rows(capsys.readouterr().out)
    assert [row[1] for row in printed] == ["1", "2"]
    report = _check_json(figures, printed, "in-process")
    assert report["meta"]["config"] == str(config) and report["meta"]["clients"] == [1, 2]
    data = plot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000  # two panels of lines, not an empty canvas


def test_plot_without_matplotlib_names_the_extra_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    config = tmp_path / "p.toml"
    config.write_text('[node]\nbackend = "Identity"\n')
    assert main(["bench", str(config), "--clients", "1", "--seconds", "5", "--plot", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before any load ran
    assert (
        captured.err.count("\n") == 1
        and "matplotlib" in captured.err
        and "pip install 'pipeserve[plot]'" in captured.err
    )
    assert not (tmp_path / "x.png").exists()


def test_plot_with_an_unknown_suffix_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "unused.toml", "--plot", str(tmp_path / "x.jpeg")]) == 2
    assert ".png" in capsys.readouterr().err


def test_report_stays_bounded_and_strict_json(tmp_path: Path) -> None:
    generator = random.Random(7)
    big = LoadResult("many", 8, 600.0)
    for _ in range(50_000):
        big.completions.append(generator.uniform(0, 600))
        big.latencies.append(generator.uniform(0.001, 0.002))
    empty = LoadResult("none", 16, 600.0, errors=3)
    report = build_report([big, empty], config="c.toml", target="in-process")
    windows, samples = report["steps"][0]["windows"], report["steps"][0]["samples"]
    assert len(windows["t_s"]) <= MAX_WINDOWS and len(samples["t_s"]) <= MAX_SAMPLES
    assert sum(windows["count"]) == 50_000 and samples["t_s"] == sorted(samples["t_s"])
    assert report["steps"][1]["summary"]["p50_ms"] is None  # no completions: null, not NaN
    write_json(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["steps"][1]["summary"]["errors"] == 3


def test_windows_hold_several_requests_of_a_slow_pipeline() -> None:
    assert choose_window(10.0, 100_000) == 0.1
    assert choose_window(10.0, 12) == 2.0  # about 1 request/s: windows of several, but still 5 of them
    assert choose_window(3600.0, 10**6) == 20.0  # at most MAX_WINDOWS windows


def test_bench_url_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("numpy")
    pytest.importorskip("uvicorn")
    from pipeserve.server import Server

    (tmp_path / "noop.toml").write_text(
        '[main]\nbackend = "Identity"\ninstance_num = 2\nmax = 8\n'
        'inputs = [{ name = "INPUT0", datatype = "FP32", shape = [1] }]\n'
        'outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [1] }]\n'
    )
    figures = tmp_path / "remote.json"
    with Server([str(tmp_path)], port=0, grpc_port=None, cpu_count=2) as server:
        url = f"http://{server.url}"
        argv = [
            "bench",
            "noop",
            "--url",
            url,
            "--clients",
            "2",
            "--seconds",
            "0.3",
            "--data",
            "3",
            "--json",
            str(figures),
        ]
        assert main(argv) == 0
    report = _check_json(figures, _printed_rows(capsys.readouterr().out), url)
    assert report["meta"]["config"] == "noop"
