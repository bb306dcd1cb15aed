"""The public call: blocking, lists, futures, asyncio, errors, exactly-once outcomes."""

import asyncio
import threading
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

import pipeserve as ps
from tests.conftest import Recording, occupy


def test_call_fills_result_and_keeps_other_keys(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "S[Identity,Add]", "add": "tag:seen"})
    item = {"data": 7, "mine": 1, "result": "stale"}
    assert pipe(item) is item
    assert item == {"data": 7, "mine": 1, "result": 7, "tag": "seen"}


def test_stale_result_is_removed_before_the_call(make_pipe: Any) -> None:
    ps.register_backend(lambda items: None, "NoResultForCallTest", replace=True)
    pipe = make_pipe({"backend": "NoResultForCallTest"})
    item = {"data": 1, "result": "old"}
    pipe(item)
    assert item == {"data": 1}  # success without a result is legal


def test_toml_path_config(tmp_path: Path, make_pipe: Any) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[only]\nbackend = "Identity"\ninstance_num = 2\n')
    pipe = make_pipe(str(path))
    assert pipe({"data": "x"})["result"] == "x"
    assert pipe.stats()["only"]["instances"] == 2


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([1], "must be a dict"),
        ({"x": 1}, "no 'data' key"),
        ({"data": 1, "node_name": "nope"}, "unknown node_name 'nope'"),
    ],
)
def test_input_errors_are_raised_before_anything_is_queued(
    make_pipe: Any, recorder: Recording, item: Any, message: str
) -> None:
    pipe = make_pipe({"backend": recorder.name})
    with pytest.raises(ps.InputError, match=message):
        pipe(item[0] if isinstance(item, list) else item)
    assert recorder.calls == [] and pipe.stats()["main"]["arrived"] == 0


def test_several_entries_need_node_name(make_pipe: Any) -> None:
    pipe = make_pipe({"a": {"backend": "Identity"}, "b": {"backend": "S[Identity,Add]", "add": "via:b"}})
    with pytest.raises(ps.InputError, match="several entries"):
        pipe({"data": 1})
    assert pipe({"data": 1, "node_name": "b"})["via"] == "b"
    assert "via" not in pipe({"data": 1, "node_name": "a"})


def test_backend_error_names_node_backend_instance_and_keeps_the_cause(make_pipe: Any) -> None:
    pipe = make_pipe({"work": {"backend": "S[Identity,RuntimeError]"}})
    item = {"data": 3}
    with pytest.raises(ps.BackendError) as info:
        pipe(item)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert (error.node, error.backend, error.instance) == ("work", "RuntimeError", 0)
    assert "node 'work'" in str(error) and "backend 'RuntimeError'" in str(error) and "instance 0" in str(error)
    assert isinstance(error.__cause__, RuntimeError) and "raised on purpose" in str(error.__cause__)
    assert item == {"data": 3}  # left as passed in


def test_list_call_gives_each_item_its_own_outcome(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 8})
    items = [{"data": 1}, {"data": "bad"}, {"data": 3}]
    with pytest.raises(ps.BackendError, match="bad item"):
        pipe(items)
    assert items == [{"data": 1, "result": 1}, {"data": "bad"}, {"data": 3, "result": 3}]
    # They were offered together: one batch of 3, then the isolation re-runs.
    assert recorder.batches()[0] == [1, "bad", 3]
    assert sorted(map(str, recorder.seen()[3:])) == ["1", "3", "bad"]


def test_submit_returns_a_future_resolving_to_the_same_dict(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Identity"})
    item = {"data": 5}
    future = pipe.submit(item)
    assert future.result(timeout=10) is item and item["result"] == 5


def test_submit_error_is_set_on_the_future(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "ValueError"})
    future = pipe.submit({"data": 1})
    with pytest.raises(ps.BackendError) as info:
        future.result(timeout=10)
    assert isinstance(info.value.__cause__, ValueError)


def test_acall_does_not_block_the_event_loop(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name})
    recorder.gate.clear()

    async def main() -> list[Any]:
        task = asyncio.ensure_future(pipe.acall({"data": 1}))
        ticks = 0
        while not recorder.entered.acquire(blocking=False):  # the loop keeps turning meanwhile
            ticks += 1
            await asyncio.sleep(0)
        recorder.gate.set()
        item = await task
        return [item["result"], ticks >= 0]

    assert asyncio.run(main()) == [1, True]


def test_cancelled_future_never_reaches_the_backend(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name})
    blocker, until_queued = occupy(recorder, pipe, {"data": "first"})
    doomed = pipe.submit({"data": "cancelled"})
    until_queued(1)
    assert doomed.cancel()
    recorder.gate.set()
    assert blocker.result(timeout=10)["result"] == "first"
    with pytest.raises(CancelledError):
        doomed.result()
    pipe.close()
    assert "cancelled" not in recorder.seen()
    assert pipe.stats()["main"]["dropped"] == 1


def test_per_call_deadline_expires_queued_items_without_running_them(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name})
    blocker, _ = occupy(recorder, pipe, {"data": "first"})
    late = {"data": "late"}
    with pytest.raises(ps.RequestTimeout) as info:
        pipe(late, timeout=0.05)
    assert isinstance(info.value, TimeoutError) and late == {"data": "late"}
    expiring = pipe.submit({"data": "submitted"}, timeout=0.05)
    with pytest.raises(ps.RequestTimeout):
        expiring.result(timeout=10)  # the deadline watch fails it while it is still queued
    recorder.gate.set()
    blocker.result(timeout=10)
    pipe.close()
    assert recorder.seen() == ["first"]
    assert pipe.stats()["main"]["expired"] + pipe.stats()["main"]["dropped"] == 2


def test_pipe_wide_timeout_from_config_in_milliseconds(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Sleep", "sleep_ms": 300, "timeout": 50})
    with pytest.raises(ps.RequestTimeout):
        pipe({"data": 1})
    assert pipe({"data": 1}, timeout=5)["result"] == 1  # the call's own timeout wins


def test_closing_fails_everything_pending_and_refuses_new_items(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "instance_num": 1})
    running, until_queued = occupy(recorder, pipe, {"data": "running"})
    queued = [pipe.submit({"data": i}) for i in range(5)]
    until_queued(5)
    closer = threading.Thread(target=pipe.close)
    closer.start()
    for future in queued:
        with pytest.raises(ps.PipeClosed):
            future.result(timeout=10)
    recorder.gate.set()
    closer.join(10)
    assert running.result(timeout=10)["result"] == "running"  # a running batch finishes
    with pytest.raises(ps.PipeClosed):
        pipe({"data": 1})
    pipe.close()  # idempotent
    assert recorder.seen() == ["running"]
    assert len(recorder.closes) == 1


def test_context_manager_closes(recorder: Recording) -> None:
    with ps.pipe({"backend": recorder.name, "instance_num": 2}) as pipe:
        pipe({"data": 1})
    assert len(recorder.closes) == 2
    assert "closed" in repr(pipe)


def test_max_and_min(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Identity", "max": "1&4&8", "min": "1&4&8"})
    assert (pipe.min(), pipe.max()) == (1, 8)
