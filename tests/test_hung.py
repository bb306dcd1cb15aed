"""Hung backends (NOTE [hung backends]): ``compute_timeout`` gives a batch up, fails its requests
with ComputeTimeout, abandons (threads) or kills (processes) the instance, and the node serves on."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import pipeserve as ps
from tests.conftest import wait_until

RELEASE = threading.Event()
BUILT: list[int] = []
CLOSED: list[int] = []


@ps.register_backend("HungTestMaybe", replace=True)
class MaybeHang(ps.Backend):
    """``result = data``; an item ``"hang"`` blocks until the test releases it (threads) or
    sleeps for a minute (in a worker process, where nothing can release it)."""

    def init(self, params: Any, options: ps.Options) -> None:
        super().init(params, options)
        if options.instance >= int(params.get("build_limit", 99)):
            raise RuntimeError("no more instances may be built")
        BUILT.append(options.instance)

    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if item["data"] == "hang":
                if not RELEASE.wait(60):
                    time.sleep(60)
            item["result"] = (item["data"], os.getpid())

    def close(self) -> None:
        CLOSED.append(self.options.instance)


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    RELEASE.clear()
    BUILT.clear()
    CLOSED.clear()
    yield
    RELEASE.set()  # let abandoned threads finish


def test_a_hung_thread_instance_is_abandoned_and_replaced(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "HungTestMaybe", "compute_timeout": 150})
    start = time.monotonic()
    with pytest.raises(ps.ComputeTimeout) as caught:
        pipe({"data": "hang"})
    assert time.monotonic() - start < 5
    error = caught.value
    assert error.node == "main" and error.instance == 0 and "compute_timeout" in str(error)
    assert pipe({"data": 1})["result"][0] == 1  # served by the replacement, at once
    stats = pipe.stats()["main"]
    assert stats["timed_out"] == 1 and stats["abandoned"] == 1
    health = pipe.health()
    assert health.ok and health.nodes["main"].abandoned == 1
    assert [i.index for i in pipe.statistics()["main"].instances] == [1]
    abandoned = [t for t in threading.enumerate() if t.name.endswith("-abandoned")]
    assert len(abandoned) == 1
    RELEASE.set()  # the hung call returns: its thread closes its backend and ends, delivering nothing
    abandoned[0].join(10)
    assert not abandoned[0].is_alive() and 0 in CLOSED
    assert pipe({"data": 2})["result"][0] == 2


def test_a_hung_batch_in_a_graph_fails_only_its_requests(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "pre": {"backend": "Identity", "next": "work"},
            "work": {"backend": "HungTestMaybe", "compute_timeout": 150, "instance_num": 2},
        }
    )
    hung = pipe.submit({"data": "hang"})
    fine = [pipe.submit({"data": i}) for i in range(20)]
    assert isinstance(hung.exception(10), ps.ComputeTimeout)
    assert [f.result(10)["result"][0] for f in fine] == list(range(20))
    assert pipe.stats()["work"]["abandoned"] == 1


def test_a_replacement_that_cannot_be_built_leaves_the_node_unhealthy(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "HungTestMaybe", "compute_timeout": 150, "build_limit": 1})
    with pytest.raises(ps.ComputeTimeout):
        pipe({"data": "hang"})
    wait_until(lambda: not pipe.health().ok, timeout=5)  # no instance is left alive
    assert pipe.health().nodes["main"].abandoned == 1


def test_a_hung_process_instance_is_killed_and_restarted(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "HungTestMaybe", "compute_timeout": 500, "instance_type": "process"})
    first_pid = pipe({"data": 0})["result"][1]
    with pytest.raises(ps.ComputeTimeout, match="worker process is killed"):
        pipe({"data": "hang"})
    value, pid = pipe({"data": 3})["result"]
    assert value == 3 and pid not in (first_pid, os.getpid())
    stats = pipe.stats()["main"]
    assert stats["timed_out"] == 1 and stats["abandoned"] == 0


def test_without_compute_timeout_nothing_watches(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "HungTestMaybe"})
    assert pipe({"data": 1})["result"][0] == 1
    assert not [t for t in threading.enumerate() if t.name.endswith("-watchdog")]
