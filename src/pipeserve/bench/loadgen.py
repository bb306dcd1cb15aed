"""Closed- and open-loop load generators and a plain-text summary table."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["LoadResult", "format_table", "measure_ideal", "percentile", "run_closed_loop", "run_open_loop"]

Item = dict[str, Any]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return math.nan
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass
class LoadResult:
    """What one load run measured. Latencies are in seconds.

    ``completions[i]`` is when the request of ``latencies[i]`` completed, in seconds from the start
    of the measuring window (closed loop) or from the first scheduled send (open loop); the two
    lists have the same length and order (not necessarily time order).
    """

    label: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def quantile_ms(self, fraction: float) -> float:
        return 1e3 * percentile(sorted(self.latencies), fraction)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "label": self.label,
            "clients": self.clients,
            "requests": self.completed,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 3),  # OCR runs at about 1 image/s: keep the digits
            "p50_ms": round(1e3 * percentile(ordered, 0.50), 3),
            "p90_ms": round(1e3 * percentile(ordered, 0.90), 3),
            "p99_ms": round(1e3 * percentile(ordered, 0.99), 3),
            "mean_ms": round(1e3 * sum(ordered) / len(ordered), 3) if ordered else math.nan,
        }


class _Progress:
    def __init__(self, stream: TextIO | None, total_seconds: float, label: str) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.total = total_seconds
        self.label = label
        self.last = 0.0

    def update(self, elapsed: float, done: int) -> None:
        if self.stream is None or elapsed - self.last < 0.2:
            return
        self.last = elapsed
        width = 30
        filled = min(width, int(width * elapsed / self.total)) if self.total else width
        self.stream.write(f"\r  {self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {done} done")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def run_closed_loop(
    call: Callable[[Item], Any],
    make_item: Callable[[int], Item],
    *,
    clients: int,
    seconds: float = 3.0,
    warmup: float = 0.5,
    label: str = "",
    progress: TextIO | None = None,
) -> LoadResult:
    """``clients`` threads each call ``call(make_item(i))`` back to back for ``seconds``.

    Measured: the requests that complete inside the window after the ``warmup`` (throughput is
    their count over ``seconds``; their latencies from send to completion). Requests still running
    at the end finish but are not counted. Errors are counted, not raised.
    """
    result = LoadResult(label, clients, 0.0)
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    timing: dict[str, float] = {}
    counter = [0]

    def client(index: int) -> None:
        latencies: list[float] = []
        completions: list[float] = []
        errors = 0
        first_error = ""
        sequence = index
        start_barrier.wait()
        begin, end = timing["begin"], timing["end"]
        while True:
            sent = time.perf_counter()
            if sent >= end:
                break
            try:
                call(make_item(sequence))
                ok = True
            except Exception as exc:  # noqa: BLE001 - counted, reported in the summary
                ok = False
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            sequence += clients
            if begin <= done <= end:  # completions inside the window, whenever they were sent
                if ok:
                    latencies.append(done - sent)
                    completions.append(done - begin)
                counter[0] += 1  # progress display only; an occasional lost update is harmless
        with lock:
            result.latencies.extend(latencies)
            result.completions.extend(completions)
            result.errors += errors
            result.first_error = result.first_error or first_error

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    timing["begin"] = now + warmup
    timing["end"] = now + warmup + seconds
    start_barrier.wait()
    bar = _Progress(progress, warmup + seconds, label)
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
            bar.update(time.perf_counter() - now, counter[0])
    bar.finish()
    result.seconds = seconds
    return result


def run_open_loop(
    submit: Callable[[Item], Future[Any]],
    make_item: Callable[[int], Item],
    *,
    rate: float,
    seconds: float = 3.0,
    label: str = "",
    progress: TextIO | None = None,
) -> LoadResult:
    """Send ``rate`` requests per second for ``seconds`` through ``submit`` (which returns a
    Future), independently of how fast they finish; latency is measured from the scheduled
    send time, so a falling-behind sender shows up in the percentiles."""
    result = LoadResult(label, 0, seconds)
    lock = threading.Lock()
    pending: list[Future[Any]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    bar = _Progress(progress, seconds, label)
    count = int(rate * seconds)

    def finished(scheduled: float) -> Callable[[Future[Any]], None]:
        def record(future: Future[Any]) -> None:
            now = time.perf_counter()
            with lock:
                if future.exception() is None:
                    result.latencies.append(now - scheduled)
                    result.completions.append(now - start)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or repr(future.exception())

        return record

    for index in range(count):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            future = submit(make_item(index))
        except Exception as exc:  # noqa: BLE001 - refused requests count as errors
            with lock:
                result.errors += 1
                result.first_error = result.first_error or repr(exc)
            continue
        future.add_done_callback(finished(scheduled))
        pending.append(future)
        bar.update(time.perf_counter() - start, len(result.latencies))
    for future in pending:
        try:
            future.result(timeout=60)
        except Exception:  # noqa: BLE001 - already counted by the callback
            pass
    bar.finish()
    return result


def measure_ideal(
    call_batch: Callable[[int], Any], *, threads: int, batch_sizes: Sequence[int], seconds: float = 1.0
) -> dict[int, float]:
    """Items per second of ``threads`` threads each calling ``call_batch(b)`` back to back, for
    each batch size ``b``: the limit a scheduler is measured against (no queues, no hand-offs).
    """
    rates: dict[int, float] = {}
    for batch in batch_sizes:
        counts = [0] * threads
        start = time.perf_counter()
        end = start + seconds

        def loop(index: int, batch: int = batch, end: float = end, counts: list[int] = counts) -> None:
            while time.perf_counter() < end:
                call_batch(batch)
                counts[index] += 1

        pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        rates[batch] = sum(counts) * batch / (time.perf_counter() - start)
    return rates


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render dicts as an aligned plain-text table (Markdown-compatible)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], stream: TextIO = sys.stdout) -> None:
    """Print :func:`format_table` of ``rows``."""
    stream.write(format_table(rows) + "\n")
