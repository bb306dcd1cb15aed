"""Multi-node pipes: validation, data flow, filters, skip folding, sub-requests (SPEC 4)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import pipeserve as ps


def _fn(name: str, function: Any) -> str:
    ps.register_backend(lambda items: [function(i["data"]) for i in items], name, replace=True)
    return name


INC = _fn("IncForGraphTest", lambda x: x + 1)
TEN = _fn("TenForGraphTest", lambda x: x * 10)


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"a": {"next": "zz"}}, r"node 'a', key 'next': unknown node 'zz'"),
        ({"a": {"next": "b"}, "b": {"next": "a"}}, r"cycle"),
        ({"a": {"next": "c"}, "b": {"next": "c"}, "c": {"map": "a[result:data]"}}, r"reachable from two roots"),
        (
            {"a": {"next": "b,c"}, "b": {"next": "d"}, "c": {"next": "d"}, "d": {}},
            r"node 'd', key 'map': has 2 predecessors",
        ),
        (
            {"a": {"next": "b"}, "b": {"next": "c"}, "c": {"map": "x[result:data]"}, "x": {}},
            r"map source 'x' is not an ancestor",
        ),
        ({"a": {"filter": "Skip"}}, r"node 'a', key 'filter': a root takes no filter"),
        ({"a": {"next": "b,c"}, "b": {}, "c": {}}, r"must end in exactly one node"),
        ({"a": {"next": "b"}, "b": {"map": "zz[result:data]"}}, r"unknown node 'zz'"),
        ({"a": {"backend": "MapReduce"}}, r"needs 'jump'"),
        ({"a": {"backend": "Jump", "jump": "nowhere"}}, r"key 'jump': unknown node 'nowhere'"),
        ({"a": {"next": "b"}, "b": {"backend": "Jump", "jump": "a"}}, r"re-enter"),
        ({"rec.2": {}}, r"logical node of 'rec', which is not defined"),
        ({"a": {"next": "b"}, "b": {"filter": "NoSuchFilter"}}, r"unknown filter 'NoSuchFilter'"),
        ({"a": {"next": "b"}, "b": {"map": "a[result]"}}, r"expected 'src:dst' pairs"),
    ],
)
def test_invalid_graphs_fail_at_construction(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ps.ConfigError, match=message):
        ps.pipe(config)


# ------------------------------------------------------------------------------- data flow
def test_chain_swaps_result_into_data(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": TEN, "next": "c"}, "c": {"backend": INC}})
    item = {"data": 1, "mine": "kept"}
    pipe(item)
    assert item == {"data": 20, "mine": "kept", "result": 21}


def test_diamond_map_reads_any_ancestor_and_branches_are_isolated(make_pipe: Any) -> None:
    ps.register_backend(_scribble, "ScribbleForGraphTest", replace=True)
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "b,c"},
            "b": {"backend": "ScribbleForGraphTest", "next": "d"},
            "c": {"backend": TEN, "next": "d"},
            "d": {"map": "a[result:first],b[result:data,note:note_b],c[result:other,note:note_c]"},
        }
    )
    item = pipe({"data": 1})
    assert item == {"first": 2, "data": 2, "note_b": "b wrote this", "other": 20, "result": 2}


def _drop_none(items: list[dict[str, Any]]) -> None:
    for item in items:
        if item.get("result") is None:
            item.pop("result", None)


def _scribble(items: list[dict[str, Any]]) -> None:
    for item in items:
        item["note"] = "b wrote this"
        item["result"] = item["data"]


def test_unnamed_map_source_is_the_single_predecessor(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"map": "[result:data,data:original]"}})
    assert pipe({"data": 1}) == {"data": 2, "original": 1, "result": 2}


def test_map_without_data_is_a_clear_error(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"next": "b"}, "b": {"map": "a[result:other]"}})
    with pytest.raises(ps.RequestError, match="node 'b': the input built by 'map' has no 'data'"):
        pipe({"data": 1})


def test_context_is_carried_through_copies_and_maps(make_pipe: Any) -> None:
    seen: list[Any] = []

    def look(items: list[dict[str, Any]]) -> None:
        for item in items:
            seen.append(item["context"])
            item["result"] = item["data"]

    ps.register_backend(look, "LookForGraphTest", replace=True)
    pipe = make_pipe(
        {
            "a": {"next": "b,c"},
            "b": {"backend": "LookForGraphTest", "next": "d"},
            "c": {"backend": "LookForGraphTest", "next": "d"},
            "d": {"backend": "LookForGraphTest", "map": "b[result:data],c[result:x]"},
        }
    )
    context = {"trace": 7}
    pipe({"data": 1, "context": context})
    assert len(seen) == 3 and all(c is context for c in seen)


def test_non_root_entry_ignores_its_ancestors(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": TEN, "next": "c"}, "c": {"backend": INC}})
    assert pipe({"data": 1, "node_name": "b"})["result"] == 11
    assert pipe({"data": 1})["result"] == 21


def test_several_components_serve_several_entries(make_pipe: Any) -> None:
    pipe = make_pipe({"x": {"backend": INC, "next": "y"}, "y": {"backend": INC}, "z": {"backend": TEN}})
    assert pipe({"data": 1, "node_name": "x"})["result"] == 3
    assert pipe({"data": 1, "node_name": "z"})["result"] == 10
    with pytest.raises(ps.InputError, match="several entries"):
        pipe({"data": 1})


def test_logical_node_runs_on_the_physical_nodes_instances(make_pipe: Any) -> None:
    threads: list[int] = []

    def record(items: list[dict[str, Any]]) -> list[Any]:
        threads.append(threading.get_ident())
        return [i["data"] * 2 for i in items]

    ps.register_backend(record, "DoubleForGraphTest", replace=True)
    pipe = make_pipe(
        {
            "rec": {"backend": "DoubleForGraphTest", "next": "mid", "inline": False},
            "mid": {"backend": INC, "next": "rec.2"},
            "rec.2": {"backend": "ignored", "filter": "swap"},
        }
    )
    assert pipe({"data": 1})["result"] == 6  # (1*2 + 1) * 2
    assert len(threads) == 2 and len(set(threads)) == 1  # both on rec's single instance
    assert set(pipe.stats()) == {"rec", "mid"}
    assert pipe.stats()["rec"]["items"] == 2


# ------------------------------------------------------------------------------- filters
@ps.register_filter("SkipOddForGraphTest")
def _skip_odd(item: dict[str, Any]) -> ps.Status:
    return ps.Status.Skip if item["data"] % 2 else ps.Status.Run


def test_explicit_filter_replaces_swap_and_skip_passes_the_input_on(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "b"},
            "b": {"backend": TEN, "filter": "SkipOddForGraphTest", "next": "c"},
            "c": {"backend": INC},
        }
    )
    # No swap before b: b sees a's input data. Even: b runs (2 * 10), then c (swap) adds one.
    assert pipe({"data": 2})["result"] == 21
    # Odd: b is skipped, its input {data: 1, result: 2} passes on; c swaps and adds one.
    assert pipe({"data": 1})["result"] == 3


def test_or_runs_only_as_a_fallback(make_pipe: Any) -> None:
    ps.register_backend(
        lambda items: [None if i["data"] < 0 else i["data"] for i in items], "MaybeForGraphTest", replace=True
    )
    ps.register_backend(_drop_none, "DropNoneForGraphTest", replace=True)
    pipe = make_pipe(
        {
            "a": {"backend": "S[MaybeForGraphTest,(Run)DropNoneForGraphTest]", "next": "b"},
            "b": {"backend": TEN, "filter": "or"},
        }
    )
    assert pipe({"data": 4})["result"] == 4  # a produced a result: the fallback is skipped
    assert pipe({"data": -4})["result"] == -40  # no result: the fallback runs


def test_break_ends_the_request_with_that_dict(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "b"},
            "b": {"backend": TEN, "filter": "Break", "next": "c"},
            "c": {"backend": INC},
        }
    )
    assert pipe({"data": 1}) == {"data": 1, "result": 2}


def test_missing_result_breaks_through_the_default_swap(make_pipe: Any) -> None:
    ps.register_backend(lambda items: None, "NothingForGraphTest", replace=True)
    pipe = make_pipe({"a": {"backend": "NothingForGraphTest", "next": "b"}, "b": {"backend": TEN}})
    assert pipe({"data": 1}) == {"data": 1}


def test_break_racing_a_slow_branch_delivers_once_and_drops_the_branch(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"next": "slow,fast"},
            "slow": {"backend": recorder.name, "next": "join"},
            "fast": {"backend": INC, "filter": "Break", "next": "join"},
            "join": {"map": "slow[result:data],fast[result:other]"},
        }
    )
    recorder.gate.clear()
    item = {"data": 1}
    future = pipe.submit(item)
    assert future.result(timeout=10) == {"data": 1, "result": 1}  # the Break won while slow waits
    recorder.gate.set()
    pipe.close()
    assert item == {"data": 1, "result": 1}  # the slow branch's late output was never delivered
    # Either it was already running (and its output was dropped) or it never ran at all.
    if recorder.seen() == []:
        assert pipe.stats()["slow"]["dropped"] == 1
    else:
        assert recorder.seen() == [1]


def test_serial_skip_folds_the_chain_into_the_skipping_node(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "b,x"},
            "b": {"backend": TEN, "filter": "SerialSkip", "next": "c"},
            "c": {"backend": TEN, "next": "join"},
            "x": {"backend": INC, "next": "join"},
            "join": {"map": "c[data:data,result:c_result],x[result:x_result]"},
        }
    )
    item = pipe({"data": 1})
    # An explicit filter means no swap: b's input is a copy of a's output {data: 1, result: 2}.
    # b and c were skipped and fold into it: the map reads c as that dict; x ran (swap) on 2.
    assert item == {"data": 1, "c_result": 2, "x_result": 3, "result": 1}
    assert pipe.stats()["b"]["items"] == 0 and pipe.stats()["c"]["items"] == 0


def test_subgraph_skip_with_two_branches_that_join(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "s,other"},
            "s": {"backend": TEN, "filter": "SubGraphSkip", "next": "l,r"},
            "l": {"backend": TEN, "next": "j"},
            "r": {"backend": TEN, "next": "j"},
            "j": {"map": "l[data:data],r[data:r_data]", "next": "end"},
            "other": {"backend": INC, "next": "end"},
            "end": {"map": "j[data:data,r_data:r_data],other[result:other]"},
        }
    )
    item = pipe({"data": 1})
    # s, l, r and j (all of whose predecessors lie inside) are skipped and fold into s's input,
    # a copy of a's output {data: 1, result: 2}: j's map never runs, so there is no r_data.
    # 'other' is outside (its predecessor is a) and ran on 2; 'end' joins both.
    assert item == {"data": 1, "other": 3, "result": 1}
    assert pipe.stats()["l"]["items"] == 0 and pipe.stats()["j"]["items"] == 0


def test_error_filter_and_first_error_name_the_node(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"filter": "Error"}})
    with pytest.raises(ps.FilterError, match="node 'b'"):
        pipe({"data": 1})
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": "ValueError"}})
    item = {"data": 1}
    with pytest.raises(ps.BackendError) as info:
        pipe(item)
    assert info.value.node == "b" and item == {"data": 1}


def test_an_error_ends_the_request_after_its_running_nodes_finish(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"next": "slow,bad"},
            "slow": {"backend": recorder.name, "next": "join"},
            "bad": {"backend": "RuntimeError", "next": "join"},
            "join": {"map": "slow[result:data],bad[result:x]"},
        }
    )
    recorder.gate.clear()
    future = pipe.submit({"data": 1})
    assert recorder.entered.acquire(timeout=10)
    time.sleep(0.05)  # give the failure time to (wrongly) end the request early
    assert not future.done()
    recorder.gate.set()
    with pytest.raises(ps.BackendError, match="node 'bad'"):
        future.result(timeout=10)


def test_deadline_and_close_hold_across_the_graph(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": INC, "next": "b"}, "b": {"backend": "Sleep", "sleep_ms": 300}})
    with pytest.raises(ps.RequestTimeout):
        pipe({"data": 1}, timeout=0.05)
    futures = [pipe.submit({"data": i}) for i in range(5)]
    pipe.close()
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=10)["result"])
        except ps.PipeClosed:
            outcomes.append("closed")
    assert len(outcomes) == 5 and "closed" in outcomes


# ------------------------------------------------------------------------------- sub-requests
def _mapreduce_pipe(make_pipe: Any, **sub: Any) -> Any:
    return make_pipe(
        {
            "pre": {"next": "each"},
            "each": {"backend": "MapReduce", "jump": "sub", "split": "data", "merge": "result,seen"},
            "sub": {"backend": INC, "next": "sub2", "max": 64, **sub},
            "sub2": {"backend": "S[Identity,Add]", "add": "seen:yes", "max": 64},
        }
    )


@pytest.mark.parametrize("count", [0, 1, 50])
def test_mapreduce_over_lists_of_0_1_and_50(make_pipe: Any, count: int) -> None:
    pipe = _mapreduce_pipe(make_pipe)
    item = pipe({"data": list(range(count)), "tag": "t"})
    assert item["result"] == [i + 1 for i in range(count)]
    assert item["seen"] == ["yes"] * count and item["tag"] == "t"
    if count:
        assert pipe.stats()["sub2"]["batch_sizes"] == {count: 1}  # handed over together


def test_mapreduce_sub_items_of_different_requests_batch_together(make_pipe: Any, recorder: Any) -> None:
    pipe = make_pipe(
        {
            "front": {"backend": recorder.name, "next": "each", "max": 8},
            "each": {"backend": "MapReduce", "jump": "sub", "split": "data"},
            "sub": {"backend": INC, "max": 64},
        }
    )
    recorder.gate.clear()
    first = pipe.submit({"data": [0]})
    assert recorder.entered.acquire(timeout=10)
    rest = [pipe.submit({"data": [k * 10 + i for i in range(5)]}) for k in range(1, 5)]
    recorder.gate.set()
    assert first.result(timeout=10)["result"] == [1]
    for k, future in enumerate(rest, start=1):
        assert future.result(timeout=10)["result"] == [k * 10 + i + 1 for i in range(5)]
    assert 20 in pipe.stats()["sub"]["batch_sizes"]  # four requests' sub-items in one batch


def test_failing_sub_item_fails_the_parent_naming_its_index(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "each": {"backend": "MapReduce", "jump": "sub"},
            "sub": {"backend": "ValueError", "error_on": "3", "max": 8},
        }
    )
    with pytest.raises(ps.BackendError, match=r"node 'each', sub-item 2 of 4.*raised on purpose"):
        pipe({"data": [1, 2, 3, 4]})
    with pytest.raises(ps.RequestError, match="expected a list under 'data'"):
        pipe({"data": 5})


def test_jump_runs_the_target_graph_and_continues_with_its_output(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": INC, "next": "j"},
            "j": {"backend": "Jump", "jump": "t", "next": "z"},
            "z": {"backend": INC},
            "t": {"backend": TEN, "next": "t2"},
            "t2": {"backend": TEN},
        }
    )
    assert pipe({"data": 1})["result"] == 2 * 100 + 1


def test_jump_and_mapreduce_cannot_be_stages() -> None:
    with pytest.raises(ps.ConfigError, match="must be a node's whole backend"):
        ps.pipe({"backend": "S[Identity,Jump]"})


# ------------------------------------------------------------------------------- concurrency, async
def test_64_threads_through_a_diamond_with_per_node_batching(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "a": {"backend": "S[Sleep,Identity]", "per_item_ms": 0.05, "max": 8, "instance_num": 2, "next": "b,c"},
            "b": {"backend": INC, "max": 8, "next": "d"},
            "c": {"backend": TEN, "max": 8, "next": "d"},
            "d": {"backend": "Sleep", "map": "b[result:data],c[result:ten]", "max": 8},
        }
    )

    def client(k: int) -> list[tuple[int, Any]]:
        out = []
        for i in range(25):
            item = pipe({"data": k * 100 + i})
            out.append((k * 100 + i, (item["result"], item["ten"])))
        return out

    with ThreadPoolExecutor(64) as pool:
        results = [pair for chunk in pool.map(client, range(64)) for pair in chunk]
    assert len(results) == 64 * 25
    for data, (result, ten) in results:
        assert result == data + 1 and ten == data * 10
    stats = pipe.stats()
    for name in "abcd":
        assert stats[name]["items"] == 64 * 25 and stats[name]["queued"] == 0
    assert max(stats[name]["mean_batch_size"] for name in "abcd") > 1.5


def test_event_returns_at_once_and_wait_reraises(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": "Sleep", "sleep_ms": 20, "next": "b"}, "b": {"backend": INC}})
    event = ps.Event()
    item = {"data": 1, "event": event}
    assert pipe(item) is item and "result" not in item
    assert event.wait(10) and item["result"] == 2
    failing = ps.Pipe({"backend": "ValueError"})
    try:
        event = ps.Event()
        failing({"data": 1, "event": event})
        with pytest.raises(ps.BackendError):
            event.wait(10)
    finally:
        failing.close()


def test_upstream_counts_let_a_window_close_as_soon_as_nothing_can_come(make_pipe: Any) -> None:
    # 'sub' waits for sub-items still upstream, with a window long enough to hang the test if it
    # were waited out; all 12 sub-items of 3 requests end in full batches.
    pipe = make_pipe(
        {
            "each": {"backend": "MapReduce", "jump": "sub"},
            "sub": {"backend": INC, "max": 4, "next": "sub2"},
            "sub2": {"backend": TEN, "max": 64, "batching_timeout": 60_000},
        }
    )
    futures = [pipe.submit({"data": list(range(4))}) for _ in range(3)]
    for future in futures:
        assert future.result(timeout=30)["result"] == [(i + 1) * 10 for i in range(4)]
    reasons = pipe.stats()["sub2"]["release_reasons"]
    assert "timeout" not in reasons
