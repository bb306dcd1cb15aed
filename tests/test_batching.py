"""The batch policy and queue, driven with a fake clock (no threads)."""

import itertools
from typing import Any

from pipeserve.batching import BatchQueue, Task, decide

_BIRTHS = itertools.count()


class _Req:
    finished = False
    deadline = None

    def __init__(self) -> None:
        self.birth = next(_BIRTHS)  # each task its own request, in the order made


def _task(data: Any, *, priority: int = 0, bucket: Any = None, score: float | None = None) -> Task:
    return Task({"data": data}, _Req(), lambda task, error: None, priority=priority, bucket=bucket, score=score)


def _queue(*tasks: Task, start: float = 0.0) -> BatchQueue:
    queue = BatchQueue()
    for offset, task in enumerate(tasks):
        queue.push(task, start + offset * 0.001)
    return queue


def test_empty_queue_waits_for_a_change() -> None:
    decision = decide(BatchQueue(), 0.0, max_batch=4, timeout=0.01, upstream=3)
    assert decision.take == 0 and decision.wait is None


def test_full_batch_is_released_at_once() -> None:
    queue = _queue(*[_task(i) for i in range(5)])
    decision = decide(queue, 0.0, max_batch=4, timeout=10, upstream=100)
    assert (decision.take, decision.reason) == (4, "full")


def test_nothing_coming_releases_a_partial_batch_without_waiting() -> None:
    queue = _queue(_task(1), _task(2))
    decision = decide(queue, 0.0, max_batch=4, timeout=10, upstream=0)
    assert (decision.take, decision.reason) == (2, "nothing_coming")


def test_window_measured_from_the_oldest_item() -> None:
    queue = _queue(_task(1), _task(2), start=1.0)  # enqueued at 1.000 and 1.001
    waiting = decide(queue, 1.004, max_batch=4, timeout=0.010, upstream=2)
    assert waiting.take == 0 and abs(waiting.wait - 0.006) < 1e-9  # type: ignore[operator]
    released = decide(queue, 1.010, max_batch=4, timeout=0.010, upstream=2)
    assert (released.take, released.reason) == (2, "timeout")


def test_instance_with_min_above_queue_waits_unless_nothing_comes() -> None:
    queue = _queue(_task(1), _task(2), _task(3))
    assert decide(queue, 0.0, max_batch=8, min_batch=4, timeout=0.0, upstream=5).take == 0
    assert decide(queue, 0.0, max_batch=8, min_batch=4, timeout=0.0, upstream=0).take == 0


def test_priority_orders_within_a_bucket() -> None:
    queue = _queue(_task("a"), _task("b"), _task("urgent", priority=5), _task("c"))
    assert [t.item["data"] for t in queue.take(None, 2)] == ["urgent", "a"]
    assert [t.item["data"] for t in queue.take(None, 5)] == ["b", "c"]
    assert queue.size == 0


def test_buckets_never_share_a_batch_and_the_oldest_bucket_goes_first() -> None:
    queue = _queue(_task("w64", bucket=64), _task("w32a", bucket=32), _task("w32b", bucket=32))
    decision = decide(queue, 0.0, max_batch=4, timeout=0, upstream=0)
    assert decision.bucket == 64 and decision.take == 1
    assert [t.item["data"] for t in queue.take(decision.bucket, decision.take)] == ["w64"]
    decision = decide(queue, 0.0, max_batch=4, timeout=0, upstream=0)
    assert decision.bucket == 32 and decision.take == 2


def test_fullest_bucket_wins_when_full() -> None:
    queue = _queue(_task(0, bucket="a"), *[_task(i, bucket="b") for i in range(4)])
    decision = decide(queue, 0.0, max_batch=4, timeout=10, upstream=9)
    assert (decision.bucket, decision.take, decision.reason) == ("b", 4, "full")


def test_sort_score_orders_the_items_of_one_request_and_age_comes_first() -> None:
    first, second = _Req(), _Req()
    tasks = [Task({"data": s}, first, lambda task, error: None, score=s) for s in (50.0, 10.0, 52.0)]
    tasks += [Task({"data": s}, second, lambda task, error: None, score=s) for s in (90.0, 48.0, 11.0)]
    queue = _queue(*reversed(tasks))  # the younger request's lines arrive first
    assert [t.item["data"] for t in queue.take(None, 4)] == [10.0, 50.0, 52.0, 11.0]
    assert [t.item["data"] for t in queue] == [48.0, 90.0]
    assert queue.size == 2


def test_an_older_requests_item_goes_ahead_of_younger_ones_that_came_first() -> None:
    old = _Req()
    young = [_task(i) for i in range(3)]
    late = Task({"data": "old"}, old, lambda task, error: None)
    queue = _queue(*young, late)
    assert [t.item["data"] for t in queue.take(None, 2)] == ["old", 0]
    assert queue.oldest_enqueued() == 0.001  # the window still runs from the earliest arrival


def test_full_buckets_overtake_the_head_only_within_the_limit() -> None:
    head = _task("head", bucket="a")
    queue = _queue(head, *[_task(i, bucket="b") for i in range(12)])
    release = lambda: decide(queue, 0.0, max_batch=4, timeout=10, upstream=9, overtake_limit=8)  # noqa: E731
    for _ in range(2):
        decision = release()
        assert (decision.bucket, decision.take, decision.reason) == ("b", 4, "full")
        queue.take(decision.bucket, decision.take)
    assert head.overtaken == 8
    decision = release()  # a third full batch would leave the head 12 behind
    assert (decision.bucket, decision.take, decision.reason) == ("a", 1, "fair")
    assert [t.item["data"] for t in queue.take("a", 1)] == ["head"]
    assert release().bucket == "b"  # nobody older waits: full batches go again


def test_remove_if_and_drain() -> None:
    queue = _queue(*[_task(i, bucket=i % 2) for i in range(6)])
    removed = queue.remove_if(lambda t: t.item["data"] >= 4)
    assert sorted(t.item["data"] for t in removed) == [4, 5]
    assert queue.size == 4
    assert sorted(t.item["data"] for t in queue.drain()) == [0, 1, 2, 3]
    assert queue.size == 0 and queue.oldest_enqueued() == float("inf")


def test_the_queue_lets_go_of_the_tasks_it_released() -> None:
    queue = _queue(*[_task(i, bucket=i % 2) for i in range(6)])
    queue.take(0, 3)
    queue.take(1, 1)
    assert len(queue._arrivals) <= 5  # white-box: the arrival list drops taken tasks from its front
    queue.take(1, 2)
    assert queue.size == 0 and len(queue._arrivals) == 0
