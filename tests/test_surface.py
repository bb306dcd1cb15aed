"""The public surface the layers on top use: entries, state, describe, statistics, health, drain,
the clock, the exports, and the pure pieces of a walk (inputs, sub-requests)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import pipeserve as ps
from pipeserve.config import load_config
from pipeserve.fanout import Gather, merge, split
from pipeserve.graph import Graph, build_input
from tests.conftest import Recording, occupy, wait_until

EXPORTS = {
    "DATATYPES", "Backend", "BackendError", "ComputeTimeout", "ConfigError", "ContractError", "EntryDescription",
    "Event", "FilterError", "GraphNodeDescription", "Health", "InputError", "InstanceHealth", "InstanceStatistics",
    "JsonLinesSink",
    "MissingDependencyError", "NodeDescription", "NodeHealth", "NodeStatistics", "Observer", "OpenTelemetrySink",
    "Options", "Overloaded", "PartialFailure", "Pipe", "PipeClosed", "PipeDescription", "PipeServeError",
    "PipeState", "RegistryError", "RemoteError", "RequestError", "RequestTimeout", "Span", "Status", "TensorSpec",
    "TraceOption", "TraceParent", "TraceSink", "UnknownNameError", "WorkerDied", "__version__", "instance_count",
    "list_backends", "list_filters", "parse_traceparent", "pipe", "register_backend", "register_filter",
    "register_lazy_backend", "BudgetStatistics", "CpuBudget", "CpuSlot", "process_budget",
}  # fmt: skip


def test_exports_are_pinned() -> None:
    assert set(ps.__all__) == EXPORTS
    for name in ps.__all__:
        assert getattr(ps, name) is not None


GRAPH = {
    "prepare": {"backend": "Identity", "next": "lines", "max": 4, "instance_num": 2,
                "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1], "json": True}]},
    "lines": {"backend": "MapReduce", "jump": "read", "next": "finish"},
    "read": {"backend": "Identity", "max": 8, "batching_timeout": 5},
    "finish": {"backend": "Identity"},
    "other": {"backend": "Identity", "instance_type": "thread"},
}  # fmt: skip


def test_describe_names_entries_nodes_ranges_signatures_and_kinds(make_pipe: Any) -> None:
    pipe = make_pipe(GRAPH)
    assert pipe.entries == ("prepare", "other")
    described = pipe.describe()
    entry = described.entries["prepare"]
    assert entry.nodes == ("prepare", "lines", "read", "finish")  # the Jump target included
    assert entry.batch_range == (1, 4) and entry.instance_kinds == frozenset({"thread"})
    assert entry.inputs == (ps.TensorSpec("IMAGE", "BYTES", (1,), "data"),)
    assert entry.outputs == (ps.TensorSpec("TEXT", "BYTES", (-1,), "result", json=True),)
    assert described.entries["other"].inputs == () and described.entries["other"].nodes == ("other",)
    assert set(described.nodes) == {"prepare", "read", "finish", "other"}  # MapReduce runs no instance
    read = described.nodes["read"]
    assert (read.backend, read.instances, read.batch_range, read.batching_timeout_ms) == ("Identity", 1, (1, 8), 5.0)
    with pytest.raises(AttributeError):
        entry.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"inputs": "INPUT0"}, "expected a list of tables"),
        ({"inputs": [{"name": "x", "datatype": "FLOAT"}]}, "expected a datatype among BOOL"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0]}]}, "positive integers or -1"),
        ({"outputs": [{"name": "x", "datatype": "FP32", "json": True}]}, "needs datatype BYTES"),
        ({"inputs": [{"name": "x", "datatype": "FP32"}, {"name": "x", "datatype": "FP32", "key": "y"}]}, "repeated"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "size": 3}]}, "unknown fields"),
    ],
)
def test_bad_declarations_fail_at_construction(declaration: dict[str, Any], message: str) -> None:
    with pytest.raises(ps.ConfigError, match=message):
        ps.pipe({"backend": "Identity", **declaration})


def test_statistics_are_frozen_typed_snapshots_with_instances(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Identity", "instance_num": 2, "max": 4})
    pipe([{"data": i} for i in range(3)])
    snapshot = pipe.statistics()["main"]
    assert isinstance(snapshot, ps.NodeStatistics)
    assert snapshot.items == 3 and snapshot.mean_batch_size == snapshot.items / snapshot.batches
    assert [i.index for i in snapshot.instances] == [0, 1]
    assert sum(i.items for i in snapshot.instances) == 3
    assert {i.state for i in snapshot.instances} == {"idle"}
    assert pipe.stats()["main"] == snapshot.as_dict()  # the dict view
    with pytest.raises(TypeError):
        snapshot.batch_sizes[1] = 5  # type: ignore[index]
    pipe({"data": 9})
    assert snapshot.items == 3  # a snapshot does not move


def test_state_goes_ready_draining_closed_and_drain_finishes_what_was_admitted(
    make_pipe: Any, recorder: Recording
) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 1})
    assert pipe.state is ps.PipeState.READY and pipe.health().ok
    first, until_queued = occupy(recorder, pipe)
    queued = pipe.submit({"data": "queued"})
    until_queued(1)
    closer = threading.Thread(target=pipe.close, kwargs={"timeout": 30, "drain": True})
    closer.start()
    wait_until(lambda: pipe.state is ps.PipeState.DRAINING)
    with pytest.raises(ps.PipeClosed, match="draining"):
        pipe.submit({"data": "late"})
    assert not pipe.health().ok  # draining is not ready
    recorder.gate.set()
    closer.join(10)
    assert first.result(timeout=10)["result"] == "first" and queued.result(timeout=10)["result"] == "queued"
    assert pipe.state is ps.PipeState.CLOSED and "closed" in repr(pipe)
    with pytest.raises(ps.PipeClosed, match="closed"):
        pipe({"data": 1})


def test_drain_fails_what_does_not_finish_within_the_bound(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 1})
    running, until_queued = occupy(recorder, pipe)
    queued = pipe.submit({"data": "queued"})
    until_queued(1)
    pipe.close(timeout=0.2, drain=True)
    with pytest.raises(ps.PipeClosed):
        queued.result(timeout=10)
    with pytest.raises(ps.PipeClosed, match="still running"):
        running.result(timeout=10)
    recorder.gate.set()


def test_a_close_without_drain_forces_a_drain_under_way(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 1})
    running, until_queued = occupy(recorder, pipe)
    queued = pipe.submit({"data": "queued"})
    until_queued(1)
    drainer = threading.Thread(target=pipe.close, kwargs={"timeout": 60, "drain": True})
    drainer.start()
    wait_until(lambda: pipe.state is ps.PipeState.DRAINING)
    pipe.close(timeout=0.1)
    with pytest.raises(ps.PipeClosed):
        queued.result(timeout=10)
    drainer.join(10)
    assert not drainer.is_alive()
    recorder.gate.set()
    with pytest.raises(ps.PipeClosed):
        running.result(timeout=10)


def test_health_reports_stuck_instances(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "instance_num": 2})
    _, _ = occupy(recorder, pipe)
    wait_until(lambda: any(i.busy_seconds > 0.05 for i in pipe.health().nodes["main"].instances))
    health = pipe.health(stuck_after=0.05)
    stuck = [i for i in health.nodes["main"].instances if i.stuck]
    assert len(stuck) == 1 and stuck[0].state == "running" and not health.ok
    assert all(i.alive and not i.broken for i in health.nodes["main"].instances)
    assert pipe.health(stuck_after=600).ok
    recorder.gate.set()


def test_a_pipe_reads_one_injected_clock(make_pipe: Any, recorder: Recording) -> None:
    now = [1000.0]
    pipe = make_pipe({"backend": recorder.name, "max": 1}, clock=lambda: now[0])
    first, until_queued = occupy(recorder, pipe)
    late = pipe.submit({"data": "late"}, timeout=5.0)  # deadline 1005 on this clock
    until_queued(1)
    now[0] = 1010.0  # the clock jumps past the deadline; real time barely moved
    recorder.gate.set()
    with pytest.raises(ps.RequestTimeout):
        late.result(timeout=10)
    assert first.result(timeout=10)["result"] == "first"
    assert recorder.seen() == ["first"]  # the expired item never reached the backend
    assert pipe.stats()["main"]["expired"] + pipe.stats()["main"]["dropped"] == 1


def test_an_entry_that_refuses_an_item_leaves_nothing_in_flight(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 1, "max_queue": 1})
    first, until_queued = occupy(recorder, pipe)
    queued = pipe.submit({"data": "q"})
    until_queued(1)
    with pytest.raises(ps.Overloaded):
        pipe.submit({"data": "refused"})
    with pytest.raises(ps.InputError):
        pipe([{"data": 1}, {"nodata": 2}])
    recorder.gate.set()
    first.result(timeout=10), queued.result(timeout=10)
    pipe.close(timeout=5, drain=True)  # returns at once: nothing admitted is left
    assert pipe.state is ps.PipeState.CLOSED


# ----------------------------------------------------------------- the pure pieces of a walk
def _graph(config: dict[str, Any]) -> Graph:
    return Graph.from_config(load_config(config).nodes)


def test_build_input_copies_or_maps_and_carries_context() -> None:
    graph = _graph(
        {
            "a": {"next": "b,c"},
            "b": {"next": "d"},
            "c": {"next": "d"},
            "d": {"map": "b[result:data],c[result:extra,k:k]"},
        }
    )
    context = object()
    outputs = {"b": {"result": 1, "context": context}, "c": {"result": 2}}
    assert build_input(graph.nodes["d"], outputs) == {"data": 1, "extra": 2, "context": context}
    copied = build_input(graph.nodes["b"], {"a": {"data": 5, "result": 6}})
    assert copied == {"data": 5, "result": 6}
    with pytest.raises(ps.RequestError, match="has no 'data'"):
        build_input(graph.nodes["d"], {"b": {}, "c": {"result": 2}})


def test_split_merge_and_gather() -> None:
    graph = _graph({"m": {"backend": "MapReduce", "jump": "t", "merge": "result,n"}, "t": {}})
    node = graph.nodes["m"]
    item = {"data": [10, 20], "k": 1}
    parts = split(node, item)
    assert parts == [{"data": 10, "k": 1}, {"data": 20, "k": 1}]
    with pytest.raises(ps.RequestError, match="expected a list under 'data'"):
        split(node, {"data": 3})
    assert merge(node, item, [])["result"] == [] and merge(node, item, [None, {"n": 2}])["n"] == [None, 2]
    outcomes: list[Any] = []
    gather = Gather(node, item, 3, lambda output, error: outcomes.append((output, error)))
    gather.finished(2, None, ps.BackendError(ValueError("late"), node="t"))
    gather.finished(0, {"result": "a"}, None)
    assert outcomes == []  # one child still runs
    gather.finished(1, None, ps.BackendError(ValueError("first"), node="t"))
    ((output, error),) = outcomes
    assert output is None and isinstance(error, ps.BackendError)
    assert str(error).startswith("node 'm', sub-item 1 of 3:") and error.node == "t"  # lowest index wins


# ----------------------------------------------------------------- errors
def test_locate_names_where_an_error_happened() -> None:
    from pipeserve.errors import locate

    foreign = locate(KeyError("k"), node="n", backend="B", instance=2)
    assert isinstance(foreign, ps.BackendError) and isinstance(foreign.__cause__, KeyError)
    assert str(foreign) == "node 'n', backend 'B', instance 2: KeyError: 'k'"
    timeout = locate(ps.RequestTimeout("slow"), node="n", backend="B", instance=0)
    assert type(timeout) is ps.RequestTimeout and str(timeout) == "node 'n', backend 'B', instance 0: slow"
    above = locate(timeout, node="outer", context="node 'outer', sub-item 0 of 1")
    assert above.node == "n" and above.instance == 0 and str(above).startswith("node 'outer', sub-item 0 of 1: ")
    died = locate(ps.WorkerDied("the worker died"), node="n", backend="P", instance=1)
    assert isinstance(died, ps.WorkerDied) and isinstance(died, ps.BackendError)
    assert str(died) == "node 'n', backend 'P', instance 1: the worker died"
    remote = ps.RemoteError("peer down", node="r")
    remote.peer = "http://127.0.0.1:9"
    assert locate(remote, node="r", context="node 'r'").peer == "http://127.0.0.1:9"  # type: ignore[attr-defined]
    assert issubclass(ps.ComputeTimeout, TimeoutError) and issubclass(ps.ComputeTimeout, ps.RequestError)
