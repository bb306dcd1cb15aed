"""The basic built-ins: Identity, Sequential with filters, Sleep, key helpers, raisers."""

import threading
import time
from typing import Any

import pytest

import pipeserve as ps


def _run(make_pipe: Any, config: dict[str, Any], data: Any = 1, **keys: Any) -> dict[str, Any]:
    item = {"data": data, **keys}
    make_pipe(config)(item)
    return item


def test_identity(make_pipe: Any) -> None:
    assert _run(make_pipe, {"backend": "Identity"}, [1, 2])["result"] == [1, 2]


@ps.register_filter("PositiveOnlyForBasicTest")
def _positive_only(item: dict[str, Any]) -> str:
    return "Run" if item["data"] > 0 else "Skip"


def _register_math() -> None:
    ps.register_backend(lambda items: [i["data"] + 1 for i in items], "IncForBasicTest", replace=True)
    ps.register_backend(lambda items: [i["data"] * 10 for i in items], "TimesTenForBasicTest", replace=True)


def test_sequential_swaps_result_into_data_between_stages(make_pipe: Any) -> None:
    _register_math()
    assert _run(make_pipe, {"backend": "S[IncForBasicTest,TimesTenForBasicTest,IncForBasicTest]"}, 1)["result"] == 21
    assert _run(make_pipe, {"backend": "Sequential[IncForBasicTest]"}, 1)["result"] == 2


def test_sequential_skip_passes_the_item_on_unchanged(make_pipe: Any) -> None:
    _register_math()
    config = {"backend": "S[(PositiveOnlyForBasicTest)IncForBasicTest,Identity]"}
    assert _run(make_pipe, config, 5)["result"] == 6
    # Skipped: the item reaches the next stage as it was; swap finds no result and breaks.
    assert _run(make_pipe, config, -5) == {"data": -5}


def test_sequential_or_runs_only_as_a_fallback(make_pipe: Any) -> None:
    _register_math()
    config = {"backend": "S[IncForBasicTest,(or)TimesTenForBasicTest]"}
    assert _run(make_pipe, config, 1)["result"] == 2  # result present: fallback skipped


@pytest.mark.parametrize("status", ["Break", "SerialSkip", "SubGraphSkip"])
def test_sequential_break_like_filters_end_the_chain_for_that_item(make_pipe: Any, status: str) -> None:
    _register_math()
    config = {"backend": f"S[IncForBasicTest,({status})TimesTenForBasicTest,IncForBasicTest]"}
    assert _run(make_pipe, config, 1)["result"] == 2


def test_sequential_error_filter_fails_only_that_item(make_pipe: Any) -> None:
    @ps.register_filter("RejectThreeForBasicTest", replace=True)
    def reject_three(item: dict[str, Any]) -> ps.Status:
        return ps.Status.Error if item["data"] == 3 else ps.Status.Run

    _register_math()
    pipe = make_pipe({"backend": "S[Identity,(RejectThreeForBasicTest)IncForBasicTest]", "max": 4})
    items = [{"data": 2}, {"data": 3}, {"data": 4}]
    with pytest.raises(ps.FilterError) as info:
        pipe(items)
    assert "RejectThreeForBasicTest" in str(info.value) and info.value.node == "main"
    assert [i.get("result") for i in items] == [3, None, 5]
    assert pipe.stats()["main"]["batch_sizes"] == {3: 1}  # no re-run was needed


def test_sequential_failing_stage_is_named(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "S[Identity,S[Identity,ValueError]]"})
    with pytest.raises(ps.BackendError) as info:
        pipe({"data": 1})
    assert info.value.backend == "ValueError"
    assert isinstance(info.value.__cause__, ValueError)


def test_filter_returning_garbage_is_a_clear_error(make_pipe: Any) -> None:
    ps.register_filter(lambda item: 42, "GarbageForBasicTest", replace=True)
    with pytest.raises(ps.BackendError, match="returned 42"):
        make_pipe({"backend": "S[Identity,(GarbageForBasicTest)Identity]"})({"data": 1})


def test_sequential_batch_range_is_the_intersection(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "S[Identity(max=8),Identity(max=4)]"})
    assert pipe.max() == 4


def test_inline_params_and_scoped_keys_reach_the_right_stage(make_pipe: Any) -> None:
    config = {"backend": "S[Add(add=a:1),Add]", "Add::add": "b:2"}
    item = _run(make_pipe, config)
    assert item["a"] == "1" and item["b"] == "2"


def test_sleep_releases_the_gil(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Sleep", "sleep_ms": 200, "inline": False})
    future = pipe.submit({"data": 1})
    counter = 0
    start = time.monotonic()
    while not future.done() and time.monotonic() - start < 5:
        counter += 1  # this thread keeps running while the instance sleeps
    assert future.result()["result"] == 1 and counter > 1000


def test_sleep_cost_grows_with_the_batch(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Sleep", "sleep_ms": 0, "per_item_ms": 20, "max": 4, "isolate": False})
    start = time.perf_counter()
    pipe([{"data": i} for i in range(4)])
    assert time.perf_counter() - start >= 0.08


def test_key_helpers_do_what_their_names_say(make_pipe: Any) -> None:
    base = {"x": 1, "tmp": 2}
    assert _run(make_pipe, {"backend": "Add", "add": "k:v, n:3"}, 7, **base) == {
        "data": 7,
        "x": 1,
        "tmp": 2,
        "k": "v",
        "n": "3",
        "result": 7,
    }
    assert _run(make_pipe, {"backend": "Remove", "remove": "tmp,absent"}, 7, **base) == {"data": 7, "x": 1, "result": 7}
    assert _run(make_pipe, {"backend": "Copy", "copy": "x:y"}, 7, **base)["y"] == 1
    moved = _run(make_pipe, {"backend": "Move", "move": "x:y"}, 7, **base)
    assert "x" not in moved and moved["y"] == 1 and moved["result"] == 7
    # A helper that moves 'result' itself does not put it back.
    moved = _run(make_pipe, {"backend": "S[Identity,(Run)Move]", "move": "result:out"}, 7)
    assert moved["out"] == 7 and "result" not in moved


def test_key_helpers_validate_their_keys() -> None:
    with pytest.raises(ps.ConfigError, match="key 'add'"):
        ps.pipe({"backend": "Add", "add": "novalue"})
    with pytest.raises(ps.ConfigError, match="key 'remove'"):
        ps.pipe({"backend": "Remove"})


def test_raisers_raise_for_listed_items_only(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "ValueError", "error_on": "2", "max": 4})
    assert pipe({"data": 1})["result"] == 1
    with pytest.raises(ps.BackendError) as info:
        pipe({"data": 2})
    assert isinstance(info.value.__cause__, ValueError)


def test_function_backend_runs_on_worker_threads_not_the_callers(make_pipe: Any) -> None:
    threads: set[int] = set()

    def record(items: list[dict[str, Any]]) -> list[Any]:
        threads.add(threading.get_ident())
        return [i["data"] for i in items]

    ps.register_backend(record, "RecordThreadForBasicTest", replace=True)
    pipe = make_pipe({"backend": "RecordThreadForBasicTest", "inline": False})
    pipe({"data": 1})
    assert threading.get_ident() not in threads
