"""The figures of a ``pipeserve bench`` run as a JSON document and as a plot.

:func:`build_report` turns the load steps' :class:`~pipeserve.bench.LoadResult` objects into a
:class:`Report`, a plain JSON-ready dict:

- ``meta``: what ran where: config, target (``"in-process"`` or the URL), closed or open loop,
  date (UTC), pipeserve and Python versions, platform and the CPU count of the machine that ran the
  load generator.
- ``steps``: one per client count (or the one ``--rate``), each with ``summary`` (exactly the row
  the table prints: label, clients, requests, errors, throughput, p50/p90/p99/mean ms), the
  latency over time as fixed ``windows`` (completions, p50 and p99 per window) and a bounded
  subsample of the individual requests (``samples``).

Sizes are bounded whatever the run's length or rate: at most :data:`MAX_WINDOWS` windows and
:data:`MAX_SAMPLES` samples per step. :func:`write_json` writes the report; :func:`write_plot`
draws it (latency over time, throughput and p99 against clients) with matplotlib, an optional
dependency imported only there, on the Agg canvas, without pyplot and never opening a window.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import pipeserve

from .loadgen import LoadResult, percentile

__all__ = [
    "MAX_SAMPLES",
    "MAX_WINDOWS",
    "PLOT_FORMATS",
    "Report",
    "Samples",
    "Step",
    "Windows",
    "build_report",
    "check_plot",
    "choose_window",
    "write_json",
    "write_plot",
]

SCHEMA = "pipeserve-bench/1"
MAX_WINDOWS = 300
"""At most this many latency windows per step."""
MAX_SAMPLES = 1000
"""At most this many individual requests per step in ``samples``."""
PLOT_FORMATS = (".png", ".svg", ".pdf")
"""The file suffixes :func:`write_plot` accepts; the suffix picks the format."""
_MISSING_MATPLOTLIB = "--plot needs matplotlib, which is not installed: pip install 'pipeserve[plot]'"


class Windows(TypedDict):
    """Latency over time in fixed windows of ``width_s`` seconds, columns of equal length, in time
    order: ``t_s`` is each window's midpoint, ``count`` its completed requests, ``p50_ms`` and
    ``p99_ms`` their latency quantiles (``None`` for a window without completions)."""

    width_s: float
    t_s: list[float]
    count: list[int]
    p50_ms: list[float | None]
    p99_ms: list[float | None]


class Samples(TypedDict):
    """Every ``stride``-th completed request in completion order: when it completed (``t_s``) and
    its latency (``latency_ms``)."""

    stride: int
    t_s: list[float]
    latency_ms: list[float]


class Step(TypedDict):
    """One load step: the printed summary row and its latency over time."""

    summary: dict[str, Any]
    windows: Windows
    samples: Samples


class Report(TypedDict):
    """A whole run: ``meta`` (see the module's docstring) and one :class:`Step` per load step."""

    meta: dict[str, Any]
    steps: list[Step]


def choose_window(span: float, completed: int) -> float:
    """The window width in seconds for ``completed`` requests over ``span`` seconds.

    The smallest of 0.1, 0.2, 0.5, 1, 2, 5, 10... seconds that gives at most :data:`MAX_WINDOWS`
    windows and, where the span still holds five windows, about five completions or more a window
    (so that a slow pipeline's p50 and p99 are not each of a single request).
    """
    wanted = max(0.1, span / MAX_WINDOWS)
    if completed > 0:
        wanted = max(wanted, min(5 * span / completed, span / 5))
    exponent = -1
    while True:
        for mantissa in (1, 2, 5):
            width = round(mantissa * 10.0**exponent, 12)
            if width >= wanted * (1 - 1e-9):
                return width
        exponent += 1


def _windows(times: Sequence[float], latencies: Sequence[float], span: float) -> Windows:
    """``times`` and ``latencies`` (seconds) already in time order, into windows over ``span``."""
    width = choose_window(span, len(times))
    count = max(1, math.ceil(span / width - 1e-9))
    buckets: list[list[float]] = [[] for _ in range(count)]
    for moment, latency in zip(times, latencies, strict=True):
        buckets[min(count - 1, max(0, int(moment / width)))].append(latency)
    windows = Windows(width_s=width, t_s=[], count=[], p50_ms=[], p99_ms=[])
    for index, bucket in enumerate(buckets):
        bucket.sort()
        windows["t_s"].append(round((index + 0.5) * width, 4))
        windows["count"].append(len(bucket))
        windows["p50_ms"].append(round(1e3 * percentile(bucket, 0.50), 3) if bucket else None)
        windows["p99_ms"].append(round(1e3 * percentile(bucket, 0.99), 3) if bucket else None)
    return windows


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _step(result: LoadResult) -> Step:
    if len(result.completions) != len(result.latencies):
        raise ValueError(f"{result.label!r}: {len(result.latencies)} latencies but {len(result.completions)} times")
    ordered = sorted(zip(result.completions, result.latencies, strict=True))
    times = [moment for moment, _ in ordered]
    latencies = [latency for _, latency in ordered]
    span = max(result.seconds, times[-1] if times else 0.0, 1e-3)  # an open loop's last ones finish late
    stride = max(1, math.ceil(len(ordered) / MAX_SAMPLES))
    summary = {key: None if _is_nan(value) else value for key, value in result.summary().items()}
    return Step(
        summary=summary,
        windows=_windows(times, latencies, span),
        samples=Samples(
            stride=stride,
            t_s=[round(moment, 4) for moment in times[::stride]],
            latency_ms=[round(1e3 * latency, 3) for latency in latencies[::stride]],
        ),
    )


def build_report(results: Sequence[LoadResult], *, config: str, target: str, rate: float = 0.0) -> Report:
    """The :class:`Report` of one run's load steps.

    Args:
        results: the steps in the order they ran, as the load generators returned them.
        config: the configuration benchmarked as the user named it (a TOML path, ``ocr``, a model).
        target: ``"in-process"`` or the URL of the server that was driven.
        rate: the open loop's requests per second; 0 for closed-loop client steps.
    """
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "config": config,
        "target": target,
        "load": "open-loop" if rate else "closed-loop",
        "clients": None if rate else [result.clients for result in results],
        "rate": rate or None,
        "seconds": results[0].seconds if results else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pipeserve": pipeserve.__version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    return Report(meta=meta, steps=[_step(result) for result in results])


def write_json(report: Report, path: str | os.PathLike[str]) -> None:
    """Write ``report`` to ``path`` as strict JSON (no NaN), indented, each list of numbers on one
    line; creates missing parent folders."""
    text = json.dumps(report, indent=2, allow_nan=False)
    text = re.sub(r"\[([^\[\]{}\"]*)\]", lambda match: "[" + " ".join(match.group(1).split()) + "]", text)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n", encoding="utf-8")


def check_plot(path: str | os.PathLike[str]) -> None:
    """Fail before a run, not after it, when :func:`write_plot` could not write ``path``.

    Raises:
        ValueError: the suffix is not one of :data:`PLOT_FORMATS`.
        ImportError: matplotlib is not installed; the message names the extra to install.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_FORMATS:
        raise ValueError(f"--plot {os.fspath(path)}: expected a file name ending in {', '.join(PLOT_FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(_MISSING_MATPLOTLIB) from None


def write_plot(report: Report, path: str | os.PathLike[str]) -> None:
    """Draw ``report`` into ``path`` (PNG, SVG or PDF by its suffix): on the left the latency over
    time of every step (p50 solid, p99 dashed, one colour per step, the sampled requests as dots),
    on the right throughput against clients (or the offered rate) with p99 on a second axis.

    Raises:
        ValueError, ImportError: as :func:`check_plot`.
    """
    check_plot(path)
    from matplotlib.figure import Figure  # a bare Figure draws on the Agg canvas: no pyplot, no window

    meta, steps = report["meta"], report["steps"]
    figure = Figure(figsize=(11.0, 4.4), layout="constrained")
    left = figure.add_subplot(1, 2, 1)
    right = figure.add_subplot(1, 2, 2)
    colours = [f"C{index % 10}" for index in range(len(steps))]

    positive: list[float] = []
    for step, colour in zip(steps, colours, strict=True):
        samples, windows = step["samples"], step["windows"]
        few = len(samples["t_s"]) < 200  # a slow pipeline's few requests: each dot should show
        left.scatter(
            samples["t_s"],
            samples["latency_ms"],
            s=12 if few else 4,
            color=colour,
            alpha=0.5 if few else 0.25,
            linewidths=0,
        )
        p50 = [math.nan if value is None else value for value in windows["p50_ms"]]
        p99 = [math.nan if value is None else value for value in windows["p99_ms"]]
        left.plot(windows["t_s"], p50, color=colour, label=str(step["summary"]["label"]), marker=".")
        left.plot(windows["t_s"], p99, color=colour, linestyle="--", marker=".")
        positive.extend(value for value in samples["latency_ms"] if value > 0)
    if positive and max(positive) > 30 * min(positive):
        left.set_yscale("log")
    widths = sorted({step["windows"]["width_s"] for step in steps})
    per = " or ".join(f"{width:g}" for width in widths)
    left.set(xlabel="seconds into the step", ylabel="latency (ms)")
    left.set_title(f"Latency over time: p50 (solid), p99 (dashed) per {per} s window", fontsize=10)
    left.grid(alpha=0.3)
    if steps:
        left.legend(fontsize=8)

    open_loop = meta.get("load") == "open-loop"
    xs = [float(meta["rate"] or 0) if open_loop else float(step["summary"]["clients"]) for step in steps]
    throughput = [float(step["summary"]["throughput"]) for step in steps]
    p99_steps = [math.nan if step["summary"]["p99_ms"] is None else float(step["summary"]["p99_ms"]) for step in steps]
    right.plot(xs, throughput, color="C0", marker="o", label="throughput")
    right.set(xlabel="offered rate (requests/s)" if open_loop else "clients", ylabel="requests/s")
    right.set_title("Throughput and p99 against load", fontsize=10)
    right.set_ylim(bottom=0)
    second = right.twinx()
    second.plot(xs, p99_steps, color="C3", marker="s", linestyle="--", label="p99")
    second.set_ylabel("p99 latency (ms)")
    second.set_ylim(bottom=0)
    if xs and min(xs) > 0 and max(xs) >= 8 * min(xs):
        right.set_xscale("log")
    if xs:
        right.set_xticks(xs, [f"{x:g}" for x in xs])
        right.minorticks_off()
    right.grid(alpha=0.3)
    handles = right.get_legend_handles_labels()
    extra = second.get_legend_handles_labels()
    right.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="best")

    figure.suptitle(
        f"pipeserve bench {meta['config']} ({meta['target']}): pipeserve {meta['pipeserve']}, {meta['python']}, "
        f"{meta['cpu_count']} CPUs, {str(meta['date'])[:10]}",
        fontsize=10,
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
