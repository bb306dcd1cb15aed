"""Per-request traces and request observers (NOTE [traces]): span structure, sampling, sinks."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

import pipeserve as ps

from .test_graph import INC


class Collected:
    """A trace sink that keeps every trace."""

    def __init__(self) -> None:
        self.traces: list[tuple[ps.Span, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, spans: Any) -> None:
        with self.lock:
            self.traces.append(tuple(spans))


def _traced(pipe: ps.Pipe) -> Collected:
    sink = Collected()
    pipe.add_trace_sink(sink)
    return sink


def _by_parent(spans: tuple[ps.Span, ...]) -> dict[int | None, list[ps.Span]]:
    found: dict[int | None, list[ps.Span]] = {}
    for span in spans:
        found.setdefault(span.parent_id, []).append(span)
    return found


def test_a_traced_request_has_a_span_per_node_visit_under_its_own(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": INC, "max": 4, "instance_num": 2}})
    sink = _traced(pipe)
    assert pipe({"data": 1}, trace=True)["result"] == 3
    pipe({"data": 5})  # not sampled: trace_rate is 0
    assert pipe.flush_traces()
    assert len(sink.traces) == 1
    root, *visits = sink.traces[0]
    assert root.kind == "request" and root.name == "request a" and root.parent_id is None
    assert root.attributes["pipeserve.outcome"] == "ok" and root.error is None
    assert [s.name for s in visits] == ["node a", "node b"]
    for span in visits:
        assert span.parent_id == root.span_id and span.trace_id == root.trace_id
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns
        assert span.attributes["pipeserve.batch_size"] == 1
        assert span.attributes["pipeserve.release_reason"] in {"nothing_coming", "full", "timeout"}
        assert span.attributes["pipeserve.instance"] in {0, 1}
        assert span.attributes["pipeserve.queue_ms"] >= 0 and span.attributes["pipeserve.compute_ms"] >= 0
    assert len({s.span_id for s in sink.traces[0]}) == 3


def test_requests_batched_together_each_record_the_shared_batch(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 4, "batching_timeout": 2000})
    sink = _traced(pipe)
    recorder.gate.clear()
    blocker = pipe.submit({"data": "x"})  # occupies the only instance
    assert recorder.entered.acquire(timeout=5)
    futures = [pipe.submit({"data": i}, trace=True) for i in range(4)]
    recorder.gate.set()
    blocker.result(5)
    for future in futures:
        future.result(5)
    assert pipe.flush_traces()
    sizes = [t[1].attributes["pipeserve.batch_size"] for t in sink.traces]
    reasons = {t[1].attributes["pipeserve.release_reason"] for t in sink.traces}
    assert sizes == [4, 4, 4, 4] and reasons == {"full"}
    assert all(t[1].attributes["pipeserve.queue_ms"] > 0 for t in sink.traces)
    assert len({t[0].trace_id for t in sink.traces}) == 4  # one trace per request


def test_mapreduce_sub_requests_nest_under_the_fan_out(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "pre": {"next": "each"},
            "each": {"backend": "MapReduce", "jump": "sub", "split": "data", "merge": "result"},
            "sub": {"backend": INC, "max": 8},
        }
    )
    sink = _traced(pipe)
    assert pipe({"data": [1, 2, 3]}, trace=True)["result"] == [2, 3, 4]
    assert pipe.flush_traces()
    spans = sink.traces[0]
    children = _by_parent(spans)
    root = spans[0]
    assert sorted(s.name for s in children[root.span_id]) == ["mapreduce each", "node pre"]
    fan = next(s for s in children[root.span_id] if s.kind == "fan_out")
    assert fan.attributes["pipeserve.parts"] == 3
    subs = sorted(children[fan.span_id], key=lambda s: s.attributes["pipeserve.index"])
    assert [s.name for s in subs] == ["sub-request sub[0]", "sub-request sub[1]", "sub-request sub[2]"]
    for sub in subs:
        (visit,) = children[sub.span_id]
        assert visit.name == "node sub" and visit.attributes["pipeserve.batch_size"] == 3  # sub-items batched
        assert fan.start_ns <= sub.start_ns <= visit.end_ns <= sub.end_ns <= fan.end_ns


def test_a_failing_node_marks_its_span_and_the_requests(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": "ValueError"}})
    sink = _traced(pipe)
    with pytest.raises(ps.BackendError):
        pipe({"data": 1}, trace=True)
    assert pipe.flush_traces()
    root, first, second = sink.traces[0]
    assert root.attributes["pipeserve.outcome"] == "BackendError" and root.error is not None
    assert first.error is None and second.error is not None and "ValueError" in second.error


def test_a_traceparent_continues_the_callers_trace_and_respects_its_sampled_flag(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": INC})
    sink = _traced(pipe)
    caller = ps.TraceParent(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    pipe({"data": 1}, trace=caller.header())
    pipe({"data": 1}, trace=ps.TraceParent(caller.trace_id, caller.span_id, False).header())
    pipe({"data": 1}, trace="not a traceparent")  # ignored: sampled at the pipe's rate (0)
    assert pipe.flush_traces()
    assert len(sink.traces) == 1
    root = sink.traces[0][0]
    assert root.trace_id == caller.trace_id and root.parent_id == caller.span_id


def test_parse_traceparent_follows_w3c() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parsed = ps.parse_traceparent(good)
    assert parsed is not None and parsed.sampled and parsed.header() == good
    assert ps.parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None  # zero trace id
    assert ps.parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is None
    assert ps.parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7") is None
    future = ps.parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
    assert future is not None and not future.sampled


def test_trace_rate_samples_a_share_into_the_json_lines_file(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    with ps.pipe({"backend": INC, "trace_rate": 0.5, "trace_file": str(path)}) as pipe:
        for i in range(400):
            pipe({"data": i})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    roots = [line for line in lines if line["kind"] == "request"]
    assert 120 < len(roots) < 280  # binomial(400, 0.5): far outside is a broken sampler
    assert len(lines) == 2 * len(roots)
    root_ids = {r["span_id"] for r in roots}
    assert all(line["parent_id"] in root_ids for line in lines if line["kind"] == "node")
    assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in lines)


def test_trace_rate_outside_zero_to_one_is_a_config_error() -> None:
    with pytest.raises(ps.ConfigError, match="trace_rate"):
        ps.pipe({"backend": "Identity", "trace_rate": 2})


def test_open_telemetry_gets_the_same_structure() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = ps.TraceParent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)
    config = {
        "pre": {"backend": "Identity", "next": "each"},
        "each": {"backend": "MapReduce", "jump": "sub", "split": "data", "merge": "result"},
        "sub": {"backend": INC, "max": 8},
    }
    with ps.pipe(config) as pipe:
        pipe.add_trace_sink(ps.OpenTelemetrySink(provider))
        assert pipe({"data": [1, 2]}, trace=caller.header())["result"] == [2, 3]
        pipe.flush_traces()
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    root = next(s for s in spans if s.name == "request pre")
    assert root.context.trace_id == caller.trace_id and root.parent is not None
    assert root.parent.span_id == caller.span_id and root.parent.is_remote
    visits = [s for s in spans if s.name == "node pre"]
    assert len(visits) == 1 and visits[0].parent is not None and visits[0].parent.span_id == root.context.span_id
    assert visits[0].attributes is not None and visits[0].attributes["pipeserve.batch_size"] == 1
    assert all(s.context.trace_id == caller.trace_id for s in spans)
    assert all(s is root or (s.parent is not None and s.parent.span_id in by_id) for s in spans)
    assert sorted(s.name for s in spans) == [
        "mapreduce each", "node pre", "node sub", "node sub", "request pre", "sub-request sub[0]", "sub-request sub[1]"
    ]  # fmt: skip
    subs = [s for s in spans if s.name.startswith("sub-request")]
    fan = next(s for s in spans if s.name == "mapreduce each")
    assert all(s.parent is not None and s.parent.span_id == fan.context.span_id for s in subs)


# ------------------------------------------------------------------------------- observers
def test_observers_see_every_outcome_once_before_the_caller(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 4, "max_queue": 2})
    seen: list[tuple[str, float, str]] = []
    pipe.add_observer(lambda entry, seconds, error: seen.append((entry, seconds, type(error).__name__)))
    pipe({"data": 1})
    assert seen and seen[-1][2] == "NoneType"  # counted before the call returned
    with pytest.raises(ps.BackendError):
        pipe({"data": "bad"})
    recorder.gate.clear()
    running = pipe.submit({"data": 2})
    assert recorder.entered.acquire(timeout=5)
    queued = [pipe.submit({"data": 3}), pipe.submit({"data": 4})]
    with pytest.raises(ps.Overloaded):
        pipe.submit({"data": 5})
    assert queued[0].cancel()
    recorder.gate.set()
    running.result(5)
    queued[1].result(5)
    pipe.close()
    kinds = Counter(kind for _, _, kind in seen)
    assert kinds == {"NoneType": 3, "BackendError": 1, "Overloaded": 1, CancelledError.__name__: 1}
    assert all(entry == pipe.entries[0] and seconds >= 0 for entry, seconds, _ in seen)


def test_a_cancel_racing_the_outcome_is_told_to_observers_as_the_caller_sees_it(make_pipe: Any) -> None:
    entered, go = threading.Event(), threading.Event()
    seen: list[BaseException | None] = []

    def observer(entry: str, seconds: float, error: BaseException | None) -> None:
        seen.append(error)
        entered.set()
        assert go.wait(5)

    pipe = make_pipe({"backend": INC})
    pipe.add_observer(observer)
    future = pipe.submit({"data": 1})
    assert entered.wait(5)
    cancelled = future.cancel()  # while the observer is being told the outcome
    go.set()
    assert not cancelled  # the Future was claimed before the observer was told: too late to cancel
    assert future.result(5)["result"] == 2 and seen == [None]


def test_a_raising_observer_costs_no_request_its_outcome(make_pipe: Any, caplog: Any) -> None:
    pipe = make_pipe({"backend": INC})

    def broken(entry: str, seconds: float, error: BaseException | None) -> None:
        raise RuntimeError("observer bug")

    pipe.add_observer(broken)
    assert [pipe({"data": i})["result"] for i in range(3)] == [1, 2, 3]
    assert sum("observer" in r.message for r in caplog.records) == 1
    pipe.remove_observer(broken)
    assert pipe({"data": 0})["result"] == 1


def test_pending_counts_requests_without_an_outcome(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe({"backend": recorder.name})
    recorder.gate.clear()
    futures = [pipe.submit({"data": i}) for i in range(3)]
    assert recorder.entered.acquire(timeout=5)
    assert pipe.pending == 3
    recorder.gate.set()
    for future in futures:
        future.result(5)
    assert pipe.pending == 0
