"""The dispatcher alone: decisions from a fake clock, no threads, no backends."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

import pipeserve as ps
from pipeserve.batching import Task
from pipeserve.config import load_config
from pipeserve.dispatch import Dispatcher
from pipeserve.instance import Instance, State, plan_groups
from pipeserve.settings import NodeSettings
from pipeserve.statistics import NodeStats

_BIRTHS = itertools.count()


class FakeRequest:
    """Just what a node asks of a request."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.finished = False
        self.birth = next(_BIRTHS)
        self.errors: list[BaseException] = []

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def fail(self, error: BaseException) -> bool:
        self.errors.append(error)
        return True


def make(config: dict[str, Any], ranges: list[tuple[int, int]] | None = None) -> tuple[Dispatcher, list[Instance]]:
    """A dispatcher over unbuilt instances, every instance idle, groups' ranges as given
    (default: the config's ``max`` with ``min`` 1)."""
    node = load_config(config).nodes["main"]
    groups, instances = plan_groups(node)
    for group, (low, high) in zip(groups, ranges or [(1, int(config.get("max", 1)))], strict=True):
        group.min, group.max = low, high
    dispatcher = Dispatcher("main", groups, NodeSettings.from_config(node), NodeStats(), threading.Lock())
    dispatcher.order_groups()
    for instance in instances:
        dispatcher.idle(instance)
    return dispatcher, instances


def tasks(count: int, request: FakeRequest | None = None, start: int = 0) -> list[Task]:
    return [Task({"data": start + i}, request or FakeRequest(), lambda t, e: None) for i in range(count)]


def assigned(instance: Instance) -> list[Any]:
    return [task.item["data"] for task in instance.batch or ()]


def test_items_queued_while_every_instance_is_busy_go_to_the_first_to_finish() -> None:
    dispatcher, (only,) = make({"max": 4})
    dispatcher.borrow(1, 0.0)  # a caller runs its item on the only instance
    assert only.state is State.BORROWED
    dispatcher.enqueue(tasks(3), 0.0)
    assert dispatcher.queue.size == 3 and not dispatcher.wake  # nobody to give them to
    dispatcher.finished(only, 0.002, by_worker=False)
    assert only.state is State.ASSIGNED and assigned(only) == [0, 1, 2]
    assert only in dispatcher.wake  # its worker sleeps: it must be rung
    assert dispatcher.stats.reasons == {"nothing_coming": 2}
    assert dispatcher.claim(only, 0.003) is not None and only.state is State.RUNNING


def test_a_worker_finishing_is_preferred_for_the_next_batch_and_not_rung() -> None:
    dispatcher, instances = make({"max": 2, "instance_num": 2})
    worker = instances[0]
    dispatcher.groups[0].idle.remove(worker)
    worker.state = State.RUNNING
    dispatcher.enqueue(tasks(2), 0.0)  # the other instance takes these
    dispatcher.wake.clear()
    dispatcher.enqueue(tasks(2, start=2), 0.001)
    dispatcher.finished(worker, 0.002, by_worker=True)
    assert assigned(worker) == [2, 3] and worker not in dispatcher.wake


def test_the_window_waits_for_upstream_items_then_times_out_on_the_fake_clock() -> None:
    dispatcher, (only,) = make({"max": 8, "batching_timeout": 10})
    dispatcher.add_upstream(2, 0.0)
    dispatcher.enqueue(tasks(1), 0.0)
    assert only.state is State.IDLE and dispatcher.wake_at == pytest.approx(0.010)
    assert dispatcher.wake == [only]  # the timer moved earlier: the idle worker re-arms
    dispatcher.wake.clear()
    dispatcher.timer_due(only, 0.005)
    assert only.state is State.IDLE
    dispatcher.timer_due(only, 0.010)
    assert assigned(only) == [0] and dispatcher.stats.reasons == {"timeout": 1}
    assert dispatcher.wake_at is None


def test_the_window_releases_as_soon_as_upstream_drains() -> None:
    dispatcher, (only,) = make({"max": 8, "batching_timeout": 10_000})
    dispatcher.add_upstream(3, 0.0)
    dispatcher.enqueue(tasks(2), 0.0)
    assert only.state is State.IDLE
    dispatcher.add_upstream(-3, 0.001)
    assert assigned(only) == [0, 1] and dispatcher.stats.reasons == {"nothing_coming": 1}


def test_an_expected_caller_holds_a_partial_batch_until_its_expectation_lapses() -> None:
    dispatcher, (only,) = make({"max": 4, "batching_timeout": 10})
    dispatcher.expected.returned(caller=1, now=0.0)
    dispatcher.enqueue(tasks(1), 0.0001)
    assert only.state is State.IDLE
    lapse = dispatcher.expected.next_lapse()
    assert lapse is not None and dispatcher.wake_at == pytest.approx(min(0.0101, lapse))
    dispatcher.timer_due(only, lapse)
    assert assigned(only) == [0]


def test_bucket_groups_take_the_largest_batch_that_fits() -> None:
    dispatcher, instances = make({"max": "1&4&8", "min": "1&4&8"}, ranges=[(1, 1), (4, 4), (8, 8)])
    dispatcher.enqueue(tasks(7), 0.0)
    by_group = {i.group: assigned(i) for i in instances}
    assert by_group == {0: [4], 1: [0, 1, 2, 3], 2: []}  # the 8-group cannot take 7
    assert dispatcher.queue.size == 2


def test_admission_refuses_beyond_the_bound_or_asks_to_wait() -> None:
    dispatcher, _ = make({"max": 1, "max_queue": 2})
    dispatcher.borrow(1, 0.0)
    dispatcher.enqueue(tasks(2), 0.0)
    with pytest.raises(ps.Overloaded, match="queue full"):
        dispatcher.has_room(1, 0.0)
    assert dispatcher.stats.rejected == 1
    blocking, _ = make({"max": 1, "max_queue": 1, "overload": "block"})
    blocking.borrow(1, 0.0)
    blocking.enqueue(tasks(1), 0.0)
    assert blocking.has_room(1, 0.0) is False
    blocking.close()
    with pytest.raises(ps.PipeClosed):
        blocking.has_room(1, 0.0)


def test_a_full_queue_drops_its_dead_tasks_before_refusing() -> None:
    dispatcher, _ = make({"max": 1, "max_queue": 2})
    dispatcher.borrow(1, 0.0)
    cancelled, late = FakeRequest(), FakeRequest(deadline=1.0)
    dispatcher.enqueue(tasks(1, cancelled) + tasks(1, late, 1), 0.0)
    cancelled.finished = True
    assert dispatcher.has_room(1, 2.0) and dispatcher.queue.size == 0
    assert [type(error) for _, error in dispatcher.dead] == [ps.PipeClosed, ps.RequestTimeout]
    assert dispatcher.stats.rejected == 0


def test_nobody_borrows_while_batching_could_help() -> None:
    dispatcher, (only,) = make({"max": 4, "batching_timeout": 10})
    dispatcher.expected.returned(caller=7, now=0.0)
    assert dispatcher.borrow(1, 0.0001) is None  # a caller is expected back
    dispatcher.expected.back(7, 0.0002)
    dispatcher.add_upstream(1, 0.0002)
    assert dispatcher.borrow(1, 0.0003) is None  # an item is on its way
    dispatcher.add_upstream(-1, 0.0003)
    assert dispatcher.borrow(5, 0.0004) is None  # more than the instance takes
    assert dispatcher.borrow(1, 0.0005) is only and only.state is State.BORROWED
    assert dispatcher.stats.inline == 1 and only.batches == 1


def test_finished_and_expired_tasks_are_dropped_never_assigned() -> None:
    dispatcher, (only,) = make({"max": 8})
    dispatcher.borrow(1, 0.0)
    done, late, live = FakeRequest(), FakeRequest(deadline=0.5), FakeRequest()
    done.finished = True
    dispatcher.enqueue(tasks(1, done) + tasks(1, late, 1) + tasks(1, live, 2), 0.0)
    dispatcher.finished(only, 1.0, by_worker=True)
    assert assigned(only) == [2]
    errors = [type(error) for _, error in dispatcher.dead]
    assert errors == [ps.PipeClosed, ps.RequestTimeout]
    assert dispatcher.stats.dropped == 1 and dispatcher.stats.expired == 1


def test_close_returns_the_queue_and_wakes_every_worker() -> None:
    dispatcher, instances = make({"max": 1, "instance_num": 2})
    for _ in instances:
        dispatcher.borrow(1, 0.0)
    dispatcher.enqueue(tasks(3), 0.0)
    queued = dispatcher.close()
    assert [t.item["data"] for t in queued] == [0, 1, 2] and dispatcher.queue.size == 0
    assert set(dispatcher.wake) == set(instances)
    for instance in instances:
        dispatcher.finished(instance, 0.1, by_worker=True)
        assert dispatcher.retire(instance) and instance.state is State.CLOSED
