"""A node's batch ``max`` and batching window changed while the pipe serves (``Pipe.adjust``): the
queued items batch under the new values, none is dropped or failed, the backend's limit holds."""

from __future__ import annotations

from typing import Any

import pytest

import pipeserve as ps
from tests.conftest import Recording, occupy


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
    ],
)
def test_bad_adjustments_are_input_errors(make_pipe: Any, node: str, keys: dict[str, Any]) -> None:
    pipe = make_pipe({"backend": "Identity", "max": 4})
    with pytest.raises(ps.InputError):
        pipe.adjust(node, **keys)
    assert pipe.max() == 4
