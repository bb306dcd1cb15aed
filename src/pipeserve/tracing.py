"""Per-request traces: a span per node visit, joined under the request's span.

NOTE [traces]
Tracing is opt-in per request: the pipe samples a share of requests (``trace_rate``, a global
configuration key) and a caller may ask for one (``trace=True``) or continue a W3C trace
(``trace="00-<trace id>-<parent span id>-01"``, the ``traceparent`` header). A sampled request
carries a :class:`Trace`; an unsampled one carries None, and every hook on the hot path is one
``is not None`` test.

The spans of a trace, all children of the request's span unless said otherwise:

* ``node <name>``: one visit of a scheduled node, from the moment the item was queued (or handed
  to an inline run) to the end of its batch; attributes say the queue wait, the compute time, the
  batch's size and release reason, the instance, and whether it ran inline.
* ``jump <name>`` / ``mapreduce <name>``: a Jump or MapReduce node, from the split to the merge;
  each of its sub-requests is a child ``sub-request <target>[i]``, the parent of the node visits
  made on that sub-request's behalf.

Readings of the pipe's clock become wall-clock nanoseconds through one anchor taken when the trace
starts. A trace is complete when its request gets its outcome: the spans are then handed, as one
tuple, to the pipe's :class:`TraceExporter`, whose thread passes them to the sinks (a JSON-lines
file, OpenTelemetry), so that no worker waits on an exporter. A node visit that ends after its
request's outcome (a batch still running when the request timed out) is not recorded.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "JsonLinesSink",
    "OpenTelemetrySink",
    "Span",
    "Trace",
    "TraceExporter",
    "TraceParent",
    "TraceSink",
    "default_sink",
    "parse_traceparent",
]

log = logging.getLogger("pipeserve.tracing")

Clock = Callable[[], float]
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceParent:
    """A W3C ``traceparent``: the trace an incoming request belongs to and the span that sent it.

    Attributes:
        trace_id: 128-bit trace id; span_id: the caller's 64-bit span id; sampled: the caller
            records this trace (its ``sampled`` flag).
    """

    trace_id: int
    span_id: int
    sampled: bool

    def header(self) -> str:
        """The value of a ``traceparent`` header naming this span."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str) -> TraceParent | None:
    """The ``traceparent`` header's value, or None when it is malformed (W3C: then ignored)."""
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or int(trace_id, 16) == 0 or int(span_id, 16) == 0:
        return None
    return TraceParent(int(trace_id, 16), int(span_id, 16), bool(int(flags, 16) & 1))


def new_span_id() -> int:
    """A random non-zero 64-bit span id."""
    return random.getrandbits(64) or 1


class Span(NamedTuple):
    """One finished span (a named tuple: made by the thousand on a traced service's path).

    Attributes:
        trace_id: the trace's 128-bit id; span_id: this span's 64-bit id; parent_id: its parent's
            (for the request's span: the remote caller's span, or None).
        name: ``request <entry>``, ``node <name>``, ``mapreduce <name>``, ``sub-request <t>[i]``.
        kind: ``request``, ``node``, ``fan_out`` or ``sub_request``.
        start_ns, end_ns: wall-clock nanoseconds since the epoch.
        attributes: what the span records (see NOTE [traces] and docs/observability.md).
        error: the error's ``ClassName: message`` when it ended in one.
    """

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any] = MappingProxyType({})
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, ids in hex as W3C and OpenTelemetry write them (one JSON line's content)."""
        return {
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "parent_id": None if self.parent_id is None else f"{self.parent_id:016x}",
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "attributes": dict(self.attributes),
            "error": self.error,
        }


TraceSink = Callable[[Sequence[Span]], None]


def describe_error(error: BaseException | None) -> str | None:
    """``ClassName: message`` of ``error`` (None for none)."""
    return None if error is None else f"{type(error).__name__}: {error}"


class Trace:
    """The spans of one sampled request, collected while it runs (NOTE [traces]).

    Args:
        entry: the request's entry node; clock: the pipe's clock; start: its reading at admission.
        exporter: receives the spans once the request has its outcome.
        parent: the remote caller's span, if the request continues a trace.

    Attributes:
        trace_id: the trace's id; root_id: the request's span id (parent of the node visits).
    """

    __slots__ = ("_anchor_ns", "_exporter", "_spans", "clock", "entry", "parent_id", "root_id", "start", "trace_id")

    def __init__(
        self, entry: str, clock: Clock, start: float, exporter: TraceExporter, parent: TraceParent | None = None
    ) -> None:
        self.entry = entry
        self.clock = clock
        self.start = start
        self.trace_id = parent.trace_id if parent is not None else (random.getrandbits(128) or 1)
        self.parent_id = parent.span_id if parent is not None else None
        self.root_id = new_span_id()
        self._anchor_ns = time.time_ns() - int(clock() * 1e9)
        self._exporter = exporter
        self._spans: list[Span] | None = []

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` naming the request's span (to send along or to return)."""
        return TraceParent(self.trace_id, self.root_id, True).header()

    def add(
        self,
        name: str,
        kind: str,
        parent: int,
        start: float,
        end: float,
        attributes: Mapping[str, Any],
        error: BaseException | None = None,
        span_id: int | None = None,
    ) -> int:
        """Record a span between clock readings ``start`` and ``end``; returns its id. After the
        request's outcome it is dropped (NOTE [traces])."""
        span_id = new_span_id() if span_id is None else span_id
        spans = self._spans
        if spans is not None:
            anchor = self._anchor_ns
            spans.append(
                Span(
                    self.trace_id,
                    span_id,
                    parent,
                    name,
                    kind,
                    anchor + int(start * 1e9),
                    anchor + int(end * 1e9),
                    attributes,
                    describe_error(error),
                )
            )
        return span_id

    def finish(self, error: BaseException | None, *, cancelled: bool = False) -> None:
        """Close the request's span with its outcome and hand the trace to the exporter (once)."""
        spans, self._spans = self._spans, None
        if spans is None:
            return
        end = self.clock()
        attributes = {"pipeserve.entry": self.entry, "pipeserve.outcome": _outcome(error, cancelled)}
        anchor = self._anchor_ns
        root = Span(
            self.trace_id,
            self.root_id,
            self.parent_id,
            f"request {self.entry}",
            "request",
            anchor + int(self.start * 1e9),
            anchor + int(end * 1e9),
            attributes,
            "CancelledError: the caller cancelled the request" if cancelled else describe_error(error),
        )
        self._exporter.export((root, *spans))


def _outcome(error: BaseException | None, cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    return "ok" if error is None else type(error).__name__


class TraceExporter:
    """Hands finished traces to sinks on a thread of its own (started with the first trace).

    With no sink added, the first trace brings in :func:`default_sink` (``fallback_path`` for its
    JSON-lines file). A sink that raises is logged once and kept.
    """

    # Seconds the thread rests after emptying its queue: traces then reach it in batches rather
    # than waking it (and taking the GIL from the pipe's threads) once per request.
    PAUSE = 0.02

    def __init__(self, fallback_path: str | None = None) -> None:
        self._sinks: list[TraceSink] = []
        self._fallback_path = fallback_path
        self._queue: queue.SimpleQueue[tuple[Span, ...] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False

    @property
    def sinks(self) -> tuple[TraceSink, ...]:
        """The sinks traces go to."""
        return tuple(self._sinks)

    def add_sink(self, sink: TraceSink) -> None:
        """Send every finished trace to ``sink`` too (called on the exporter's thread)."""
        with self._lock:
            self._sinks.append(sink)

    def export(self, spans: tuple[Span, ...]) -> None:
        """Queue one finished trace (its request's span first)."""
        if self._closed:
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="pipeserve-traces", daemon=True)
                    self._thread.start()
        self._queue.put(spans)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every trace queued so far reached the sinks; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued, then stop the thread and close the sinks that have a
        ``close`` method."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        for sink in tuple(self._sinks):
            self._call(getattr(sink, "close", None))

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            while True:  # everything queued, then a pause (see PAUSE)
                if message is None:
                    self._flush_sinks()
                    return
                if isinstance(message, threading.Event):
                    self._flush_sinks()
                    message.set()
                else:
                    self._export(message)
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._flush_sinks()
            time.sleep(self.PAUSE)

    def _export(self, spans: tuple[Span, ...]) -> None:
        if not self._sinks and self._fallback_path is not None:
            self.add_sink(default_sink(self._fallback_path))
            self._fallback_path = None
        for sink in tuple(self._sinks):
            self._call(sink, spans)

    def _flush_sinks(self) -> None:
        for sink in tuple(self._sinks):
            self._call(getattr(sink, "flush", None))

    def _call(self, method: Callable[..., object] | None, *args: Any) -> None:
        if method is None:
            return
        try:
            method(*args)
        except Exception:  # a failing sink must not stop the others
            if not self._warned:
                self._warned = True
                log.exception("a trace sink failed (reported once)")


class JsonLinesSink:
    """Appends every span as one JSON line (:meth:`Span.as_dict`) to ``path``: buffered, written
    out whenever the exporter has nothing queued (``flush``), and at ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._out: Any = None

    def __call__(self, spans: Sequence[Span]) -> None:
        text = "".join([_json_line(span) for span in spans])
        with self._lock:
            if self._out is None:
                self._out = self.path.open("a", encoding="utf-8")
            self._out.write(text)

    def flush(self) -> None:
        """Write out what is buffered."""
        with self._lock:
            if self._out is not None:
                self._out.flush()

    def close(self) -> None:
        """Write out and close the file (a later trace opens it again)."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def _json_line(span: Span) -> str:
    """``json.dumps(span.as_dict()) + "\\n"``, built directly (a traced service writes many)."""
    dumps = json.dumps  # no keyword arguments: json's cached encoder
    parent = "null" if span.parent_id is None else f'"{span.parent_id:016x}"'
    return (
        f'{{"trace_id": "{span.trace_id:032x}", "span_id": "{span.span_id:016x}", "parent_id": {parent}, '
        f'"name": {dumps(span.name)}, "kind": "{span.kind}", "start_ns": {span.start_ns}, "end_ns": {span.end_ns}, '
        f'"attributes": {dumps(dict(span.attributes))}, "error": {dumps(span.error)}}}\n'
    )


class OpenTelemetrySink:
    """Re-creates each trace's spans through an OpenTelemetry tracer (``opentelemetry-api``; the
    SDK's provider decides where they go), with their times, attributes, errors and nesting.

    Args:
        tracer_provider: the provider to use; default the global one.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        from .errors import MissingDependencyError

        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDependencyError("tracing through OpenTelemetry needs: pip install opentelemetry-sdk") from exc
        self._trace = trace
        self._tracer = trace.get_tracer("pipeserve", tracer_provider=tracer_provider)

    def __call__(self, spans: Sequence[Span]) -> None:
        trace = self._trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

        contexts: dict[int, Any] = {}
        children: dict[int | None, list[Span]] = {}
        for span in spans:
            children.setdefault(span.parent_id, []).append(span)
        root = spans[0]
        if root.parent_id is not None:
            remote = SpanContext(root.trace_id, root.parent_id, is_remote=True, trace_flags=TraceFlags(1))
            contexts[root.parent_id] = trace.set_span_in_context(NonRecordingSpan(remote))
        todo = [root]
        while todo:
            span = todo.pop()
            made = self._tracer.start_span(
                span.name,
                context=contexts.get(span.parent_id) if span.parent_id is not None else None,
                attributes={"pipeserve.kind": span.kind, **span.attributes},
                start_time=span.start_ns,
            )
            if span.error is not None:
                made.set_status(Status(StatusCode.ERROR, span.error))
            made.end(end_time=span.end_ns)
            contexts[span.span_id] = trace.set_span_in_context(made)
            todo.extend(children.get(span.span_id, ()))


def default_sink(path: str | Path) -> TraceSink:
    """OpenTelemetry when its SDK is installed and a tracer provider is configured (the global
    one is not the API's no-op placeholder); a :class:`JsonLinesSink` at ``path`` otherwise."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return JsonLinesSink(path)
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return OpenTelemetrySink()
    return JsonLinesSink(path)
