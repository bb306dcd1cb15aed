"""The elastic CPU budget (NOTE [elastic budget]): grants, slots, and the backends that use them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

import pipeserve as ps
from tests.conftest import wait_until


def test_a_lone_elastic_call_gets_the_idle_cores_and_falls_back_to_its_share_under_load() -> None:
    budget = ps.CpuBudget(4)
    elastic = [budget.join(1, most=4) for _ in range(2)]
    python = [budget.join(1) for _ in range(2)]
    assert budget.fair_share() == 1
    assert budget.grant(elastic[0]) == 4  # alone: every core
    elastic[0].busy = 0
    python[0].busy = python[1].busy = 1  # two GIL-bound stages run
    assert budget.grant(elastic[0]) == 2  # what they leave
    assert budget.grant(elastic[1]) == 1  # nothing left: its fair share
    assert budget.statistics().busy == 2 + 1 + 2
    stats = budget.statistics()
    assert (stats.cores, stats.slots, stats.weight, stats.grants, stats.widened) == (4, 4, 4, 3, 2)


def test_grants_never_widen_two_calls_at_once_and_respect_the_most() -> None:
    budget = ps.CpuBudget(8)
    slots = [budget.join(1, most=most) for most in (3, 8, 8, 8)]
    first = budget.grant(slots[0])
    assert first == 3  # its own limit, though 8 are idle
    granted = [first] + [budget.grant(slot) for slot in slots[1:]]
    assert granted == [3, 5, 2, 2]  # 3 + 5 fill the cores; later calls get the fair share (8 // 4)
    for slot in slots:
        slot.busy = 0
        slot.leave()
        slot.leave()  # idempotent
    assert budget.statistics().slots == 0 and budget.fair_share() == 8


def test_a_budget_needs_a_core() -> None:
    with pytest.raises(ValueError, match="at least one core"):
        ps.CpuBudget(0)


class Elastic(ps.Backend):
    """Records the grant of each batch; blocks in forward while ``hold`` is clear."""

    granted: ClassVar[list[int]] = []
    hold = threading.Event()
    entered = threading.Semaphore(0)

    def max_threads(self) -> int:
        return self.options.cpu_cores

    def use_threads(self, granted: int) -> int:
        Elastic.granted.append(granted)
        return granted

    def forward(self, items: list[dict[str, Any]]) -> None:
        Elastic.entered.release()
        Elastic.hold.wait(10)
        for item in items:
            item["result"] = item["data"]


class Waits(ps.Backend):
    cpu_weight = 0  # like Remote: waits on I/O


@pytest.fixture()
def elastic() -> Any:
    ps.register_backend("BudgetElastic", replace=True)(Elastic)
    ps.register_backend("BudgetWaits", replace=True)(Waits)
    Elastic.granted = []
    Elastic.entered = threading.Semaphore(0)
    Elastic.hold.set()
    yield Elastic
    Elastic.hold.set()


def test_instances_join_the_pipes_budget_and_leave_it_when_closed(elastic: Any) -> None:
    budget = ps.CpuBudget(4)
    config = {
        "a": {"backend": "BudgetElastic", "instance_num": 2, "next": "b"},
        "b": {"backend": "Identity", "next": "c"},
        "c": {"backend": "BudgetWaits", "instance_num": 3},
    }
    with ps.pipe(config, budget=budget) as pipe:
        stats = budget.statistics()
        assert (stats.slots, stats.weight, stats.fair_share) == (3, 3, 1)  # c's instances wait: no slots
        assert pipe.budget is budget
        assert [pipe({"data": i})["result"] for i in range(3)] == [0, 1, 2]
        assert elastic.granted == [4, 4, 4]  # each request ran alone
        with ps.pipe({"backend": "Identity", "instance_num": 2}, budget=budget):
            assert budget.statistics().slots == 5  # a second pipe shares it
        assert budget.statistics().slots == 3
    assert budget.statistics().slots == 0


def test_an_elastic_call_under_load_gets_only_what_the_running_batches_leave(elastic: Any) -> None:
    budget = ps.CpuBudget(4)
    with ps.pipe({"backend": "BudgetElastic", "instance_num": 3}, budget=budget) as pipe:
        elastic.hold.clear()
        futures = [pipe.submit({"data": 0})]
        assert elastic.entered.acquire(timeout=10)
        futures.append(pipe.submit({"data": 1}))
        assert elastic.entered.acquire(timeout=10)
        futures.append(pipe.submit({"data": 2}))
        assert elastic.entered.acquire(timeout=10)
        assert elastic.granted == [4, 1, 1]  # the first took every core; the others their share
        assert budget.statistics().busy == 6  # the widened call overlaps for its remainder only
        elastic.hold.set()
        assert [f.result(10)["result"] for f in futures] == [0, 1, 2]
        wait_until(lambda: budget.statistics().busy == 0)
        assert pipe({"data": 3})["result"] == 3 and elastic.granted[-1] == 4


def test_pipes_share_the_process_budget_by_default() -> None:
    with ps.pipe({"backend": "Identity", "instance_num": 2}) as first, ps.pipe({"backend": "Identity"}) as second:
        assert first.budget is second.budget is ps.process_budget()
        assert ps.process_budget().statistics().slots >= 3
    with ps.pipe({"backend": "Identity"}, cpu_count=3) as own:
        assert own.budget is not ps.process_budget() and own.budget.cores == 3


onnx = pytest.importorskip("onnx")


def test_onnx_sessions_are_elastic_unless_threads_are_set(tmp_path: Path) -> None:
    from tests.test_onnx import affine_model

    np = pytest.importorskip("numpy")
    model = affine_model(tmp_path / "a.onnx")
    budget = ps.CpuBudget(4)

    def threads(session: Any) -> int:
        return int(session.get_session_options().intra_op_num_threads)

    with ps.pipe({"backend": "Onnx", "model": model, "instance_num": 2}, budget=budget) as pipe:
        backend = pipe._nodes["main"].instances[0].backend  # white-box: its sessions
        assert sorted(backend.sessions) == [2, 4] and backend.max_threads() == 4
        assert backend.use_threads(4) == 4 and threads(backend.session) == 4
        assert backend.use_threads(3) == 2 and threads(backend.session) == 2
        assert backend.use_threads(1) == 1 and sorted(backend.sessions) == [1, 2, 4]  # opened for it
        out = pipe({"data": np.ones((1, 4), dtype=np.float32)})["result"]
        assert out.shape == (1, 3)
        assert budget.statistics().widened >= 1
    with ps.pipe({"backend": "Onnx", "model": model, "intra_op_threads": 3}, budget=budget) as pipe:
        backend = pipe._nodes["main"].instances[0].backend
        assert list(backend.sessions) == [3] and backend.use_threads(1) == 3
    with ps.pipe({"backend": "Onnx", "model": model, "elastic": False}, budget=budget) as pipe:
        backend = pipe._nodes["main"].instances[0].backend
        assert list(backend.sessions) == [4] and backend.max_threads() == 4 and backend.use_threads(1) == 4


def test_onnx_widens_only_where_more_threads_paid_off(tmp_path: Path) -> None:
    from tests.test_onnx import affine_model

    model = affine_model(tmp_path / "a.onnx")
    with ps.pipe({"backend": "Onnx", "model": model, "instance_num": 2}, budget=ps.CpuBudget(4)) as pipe:
        backend = pipe._nodes["main"].instances[0].backend  # white-box: its learnt costs
        backend.costs = {4: [1.0, 3]}
        assert backend.use_threads(4) == 2  # the narrow session is tried before they are compared
        backend.costs = {2: [1.0, 3], 4: [0.9, 3]}
        assert backend.use_threads(4) == 2  # 1.1x faster does not pay for a second core
        backend.costs = {2: [1.0, 3], 4: [0.6, 3]}
        assert backend.use_threads(4) == 4
        backend._learn(1000, 0.0009)
        assert backend.costs[4][1] == 4 and backend.costs[4][0] < 0.6
