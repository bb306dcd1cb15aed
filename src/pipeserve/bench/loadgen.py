"""Closed- and open-loop load generators and a plain-text summary table.

Two ways to bound a load step:

- duration (``seconds=``): clients send back to back for a fixed time after the warm-up; what
  completes inside the window is measured, and throughput is that count over the window.
- fixed count (``requests=N``): after the warm-up (and after every warm-up request has finished),
  the clients send exactly ``N`` requests in all, sharing them out as they become free;
  throughput is ``N`` (less errors) over the wall time from the first measured send to the last
  completion. On a slow pipeline this says what a figure rests on ("40 requests in 52.1 s"),
  where a short window would count a handful of completions and a lucky or unlucky boundary.

:meth:`LoadResult.summary` reports throughput with three significant digits (0.497, 12.3, 1530),
and :func:`format_table` prints every float with three (2.00, 0.0497), whole numbers from 100 up
(1,530), so a table neither drops a slow pipeline's digits nor invents a fast one's.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = [
    "LoadResult",
    "format_table",
    "measure_ideal",
    "percentile",
    "run_closed_loop",
    "run_open_loop",
    "significant",
]

Item = dict[str, Any]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return math.nan
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def significant(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits: 0.49731 -> 0.497, 12.34 -> 12.3,
    1534.2 -> 1530.0 (zero, NaN and infinities unchanged)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


@dataclass
class LoadResult:
    """What one load run measured. Latencies are in seconds.

    ``seconds`` is the measuring window: the duration asked for, or in the fixed-count mode the
    wall time from the first measured send to the last completion. ``requested`` is the fixed
    count (``None`` for a duration). ``completions[i]`` is when the request of ``latencies[i]``
    completed, in seconds from the start of the measuring window (closed loop) or from the first
    scheduled send (open loop); the two lists have the same length and order (not necessarily
    time order).
    """

    label: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    requested: int | None = None

    @property
    def mode(self) -> str:
        """``"requests"`` (a fixed count) or ``"duration"``."""
        return "duration" if self.requested is None else "requests"

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
            "throughput": significant(self.throughput, 3),  # 0.497, 12.3, 1530: as many digits as it is worth
            "p50_ms": round(1e3 * percentile(ordered, 0.50), 3),
            "p90_ms": round(1e3 * percentile(ordered, 0.90), 3),
            "p99_ms": round(1e3 * percentile(ordered, 0.99), 3),
            "mean_ms": round(1e3 * sum(ordered) / len(ordered), 3) if ordered else math.nan,
        }


class _Progress:
    def __init__(self, stream: TextIO | None, total_seconds: float, label: str, total_requests: int = 0) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.total = total_seconds
        self.requests = total_requests
        self.label = label
        self.last = 0.0

    def update(self, elapsed: float, done: int) -> None:
        if self.stream is None or elapsed - self.last < 0.2:
            return
        self.last = elapsed
        width = 30
        if self.requests:
            filled = min(width, width * done // self.requests)
        else:
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
    requests: int | None = None,
    warmup: float = 0.5,
    label: str = "",
    progress: TextIO | None = None,
) -> LoadResult:
    """``clients`` threads each call ``call(make_item(i))`` back to back for ``seconds``, or
    until ``requests`` requests in all have been measured.

    Duration (``requests`` None): measured are the requests that complete inside the window of
    ``seconds`` after the ``warmup`` (throughput is their count over ``seconds``; their latencies
    from send to completion). Requests still running at the end finish but are not counted.

    Fixed count (``requests=N``, ``seconds`` ignored): the clients call for ``warmup`` seconds
    unmeasured; once every warm-up request has finished they send ``make_item(0)`` to
    ``make_item(N - 1)`` between them, each taking the next as it becomes free. Measured are
    exactly those ``N``; ``seconds`` of the result is the wall time from the first of them sent to
    the last completed, and throughput the successful ones over it.

    Errors are counted, not raised.
    """
    if requests is not None:
        return _closed_loop_count(call, make_item, clients, requests, warmup, label, progress)
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
            error = _attempt(call, make_item(sequence))
            ok = not error
            if error:
                errors += 1
                first_error = first_error or error
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
    _follow(threads, _Progress(progress, warmup + seconds, label), now, lambda: counter[0])
    result.seconds = seconds
    return result


def _attempt(call: Callable[[Item], Any], item: Item) -> str:
    """Make one call: "" when it succeeded, else its error as the summary reports it."""
    try:
        call(item)
    except Exception as exc:  # noqa: BLE001 - counted, reported in the summary
        return f"{type(exc).__name__}: {exc}"
    return ""


def _follow(threads: Sequence[threading.Thread], bar: _Progress, start: float, done: Callable[[], int]) -> None:
    """Wait for the client threads, updating the progress bar with ``done()`` meanwhile."""
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
            bar.update(time.perf_counter() - start, done())
    bar.finish()


def _closed_loop_count(
    call: Callable[[Item], Any],
    make_item: Callable[[int], Item],
    clients: int,
    requests: int,
    warmup: float,
    label: str,
    progress: TextIO | None,
) -> LoadResult:
    """:func:`run_closed_loop` with a fixed count of measured requests."""
    if requests < 1 or clients < 1:
        raise ValueError(f"requests and clients must be at least 1 (got requests={requests}, clients={clients})")
    result = LoadResult(label, clients, 0.0, requested=requests)
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    warm_barrier = threading.Barrier(clients)
    timing: dict[str, float] = {}
    issued = [0]
    done_count = [0]
    spans: list[tuple[float, float]] = []  # (first send, last completion) per client

    def client(index: int) -> None:
        start_barrier.wait()
        sequence = index
        while time.perf_counter() < timing["warm_end"]:
            try:
                call(make_item(sequence))
            except Exception:  # noqa: BLE001 - the warm-up is not measured
                pass
            sequence += clients
        warm_barrier.wait()  # every warm-up request has finished: the measured ones run alone
        latencies: list[float] = []
        sent_at: list[float] = []
        done_at: list[float] = []
        errors = 0
        first_error = ""
        while True:
            with lock:
                ticket = issued[0]
                if ticket >= requests:
                    break
                issued[0] += 1
            sent = time.perf_counter()
            error = _attempt(call, make_item(ticket))
            ok = not error
            if error:
                errors += 1
                first_error = first_error or error
            done = time.perf_counter()
            sent_at.append(sent)
            if ok:
                latencies.append(done - sent)
                done_at.append(done)
            with lock:
                done_count[0] += 1
        with lock:
            result.latencies.extend(latencies)
            result.completions.extend(done_at)  # absolute for now; made relative below
            result.errors += errors
            result.first_error = result.first_error or first_error
            if sent_at:
                spans.append((min(sent_at), max(done_at, default=sent_at[-1])))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    timing["warm_end"] = now + warmup
    start_barrier.wait()
    _follow(threads, _Progress(progress, 0.0, label, requests), now, lambda: done_count[0])
    begin = min(first for first, _ in spans)
    result.seconds = max(last for _, last in spans) - begin
    result.completions = [moment - begin for moment in result.completions]
    return result


def run_open_loop(
    submit: Callable[[Item], Future[Any]],
    make_item: Callable[[int], Item],
    *,
    rate: float,
    seconds: float = 3.0,
    requests: int | None = None,
    label: str = "",
    progress: TextIO | None = None,
) -> LoadResult:
    """Send ``rate`` requests per second for ``seconds`` (or ``requests`` of them, over
    ``requests / rate`` seconds) through ``submit`` (which returns a Future), independently of how
    fast they finish; latency is measured from the scheduled send time, so a falling-behind sender
    shows up in the percentiles."""
    if requests is not None:
        seconds = requests / rate
    result = LoadResult(label, 0, seconds, requested=requests)
    lock = threading.Lock()
    pending: list[Future[Any]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    bar = _Progress(progress, seconds, label)
    count = int(rate * seconds) if requests is None else requests

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
    """A float with three significant digits (0.497, 12.3, 2.00), whole from 100 up (1,530,
    1,235), so that neither a slow pipeline's 0.497 images/s nor a fast one's 1,530 requests/s
    loses or invents digits; past the third decimal without trailing zeros (0.0497, but 0.008 for
    a latency the summary rounded to 3 decimals); anything else as ``str``."""
    if isinstance(value, float) and math.isfinite(value):
        if abs(value) >= 99.95:
            return f"{value:,.0f}"
        if value == 0:
            return "0"
        rounded = significant(value, 3)
        decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
        text = f"{rounded:,.{decimals}f}"
        return text.rstrip("0") if decimals > 3 else text  # below 0.01: three decimals stay
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], stream: TextIO = sys.stdout) -> None:
    """Print :func:`format_table` of ``rows``."""
    stream.write(format_table(rows) + "\n")
