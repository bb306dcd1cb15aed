"""A node's batch ``max`` and batching window changed while the pipe serves (``Pipe.adjust``): the
queued items batch under the new values, none is dropped or failed, the backend's limit holds."""

from __future__ import annotations

from typing import Any

import pytest

import pipeserve as ps
from tests.conftest import Recording, occupy, pause


def test_a_lower_max_splits_the_queued_items_and_none_is_lost(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 8})
    blocker, until_queued = occupy(recorder, pipe)
    futures = [pipe.submit({"data": i}) for i in range(7)]
    until_queued(7)
    pipe.adjust("main", max=2)
    assert pipe.max() == 2 and pipe.describe().nodes["main"].batch_range == (1, 2)
    recorder.gate.set()
    assert [f.result(timeout=10)["result"] for f in futures] == list(range(7))
    blocker.result(timeout=10)
    assert [len(batch) for batch in recorder.batches()[1:]] == [2, 2, 2, 1]
    # Back up, but never above what the backend accepts (its max key here).
    pipe.adjust("main", max=100)
    assert pipe.max() == 8


def test_a_shorter_window_releases_a_waiting_batch(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "max": 4, "batching_timeout": 60_000})
    waiting = pipe.submit({"data": "alone"})
    pipe.adjust("main", batching_timeout_ms=0)
    assert waiting.result(timeout=10)["result"] == "alone"  # not after the 60 s window
    assert pipe.describe().nodes["main"].batching_timeout_ms == 0
    pipe.adjust("main", batching_timeout_ms=5)
    assert pipe.describe().nodes["main"].batching_timeout_ms == pytest.approx(5)
    assert pipe.stats()["main"]["batches"] == 1


@pytest.mark.parametrize(
    ("node", "keys"),
    [
        ("nope", {"max": 2}),
        ("main", {"max": 0}),
        ("main", {"max": 2.5}),
        ("main", {"max": True}),
        ("main", {"batching_timeout_ms": -1}),
        ("main", {"batching_timeout_ms": float("nan")}),
        ("main", {"instances": 0}),
    ],
)
def test_bad_adjustments_are_input_errors(make_pipe: Any, node: str, keys: dict[str, Any]) -> None:
    pipe = make_pipe({"backend": "Identity", "max": 4})
    with pytest.raises(ps.InputError):
        pipe.adjust(node, **keys)
    assert pipe.max() == 4


def test_fewer_instances_park_the_others_and_more_bring_them_back(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "instance_num": 3})
    pipe.adjust("main", instances=1)
    assert pipe.describe().nodes["main"].active_instances == 1
    until_queued = pause(recorder, pipe)
    futures = [pipe.submit({"data": i}) for i in range(3)]
    assert recorder.entered.acquire(timeout=10)
    until_queued(2)  # one instance at work, the two others parked: the rest wait
    pipe.adjust("main", instances=3)
    until_queued(0)  # the parked ones took the waiting items at once
    assert recorder.entered.acquire(timeout=10) and recorder.entered.acquire(timeout=10)
    recorder.gate.set()
    assert [f.result(timeout=10)["result"] for f in futures] == [0, 1, 2]
    assert len({instance for instance, _, _ in recorder.calls}) == 3
    assert pipe.describe().nodes["main"].active_instances == 3
    pipe.adjust("main", instances=99)  # never more than were built
    assert pipe.describe().nodes["main"].active_instances == 3


def test_a_busy_instance_is_parked_when_its_batch_ends(make_pipe: Any, recorder: Recording) -> None:
    pipe = make_pipe({"backend": recorder.name, "instance_num": 2})
    blocker, until_queued = occupy(recorder, pipe)
    second = pipe.submit({"data": "second"})
    assert recorder.entered.acquire(timeout=10)  # both instances busy
    pipe.adjust("main", instances=1)
    more = [pipe.submit({"data": i}) for i in range(4)]
    until_queued(4)
    recorder.gate.set()
    assert [f.result(timeout=10)["result"] for f in more] == [0, 1, 2, 3]
    assert blocker.result(timeout=10)["result"] == "first" and second.result(timeout=10)["result"] == "second"
    # After the adjustment one instance ran everything that was queued.
    late = [instance for instance, _, data in recorder.calls if data[0] in (0, 1, 2, 3)]
    assert len(set(late)) == 1
    pipe.close()
    assert pipe.stats()["main"]["dropped"] == 0
