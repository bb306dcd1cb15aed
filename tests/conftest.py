"""Shared fixtures: pipes that close themselves, and a recording backend that can be paused."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import pipeserve as ps

_names = itertools.count()


def http_ready(port: int) -> bool:
    """Whether a server on 127.0.0.1:``port`` says it is ready (``/v2/health/ready``)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


@dataclass
class Recording:
    """What a recording backend saw. ``gate`` pauses every forward call while cleared."""

    name: str
    calls: list[tuple[int, int, list[Any]]] = field(default_factory=list)  # (instance, thread, data)
    inits: list[tuple[int, int]] = field(default_factory=list)  # (instance, thread)
    closes: list[tuple[int, int]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def batches(self) -> list[list[Any]]:
        with self.lock:
            return [data for _, _, data in self.calls]

    def seen(self) -> list[Any]:
        return [d for batch in self.batches() for d in batch]


@pytest.fixture
def recorder() -> Recording:
    """A freshly registered backend that records calls; ``result = data``; fails on data 'bad'."""
    rec = Recording(name=f"Rec{next(_names)}")
    rec.gate.set()

    class Rec(ps.Backend):
        def init(self, params: Any, options: ps.Options) -> None:
            super().init(params, options)
            rec.inits.append((options.instance, threading.get_ident()))

        def forward(self, items: list[dict[str, Any]]) -> None:
            rec.entered.release()
            assert rec.gate.wait(30), "test gate never opened"
            with rec.lock:
                rec.calls.append((self.options.instance, threading.get_ident(), [i["data"] for i in items]))
            if any(i["data"] == "bad" for i in items):
                raise ValueError("bad item")
            for item in items:
                item["result"] = item["data"]

        def close(self) -> None:
            rec.closes.append((self.options.instance, threading.get_ident()))

    ps.register_backend(Rec, rec.name)
    return rec


@pytest.fixture
def make_pipe() -> Iterator[Callable[..., ps.Pipe]]:
    """Build pipes that are closed at the end of the test."""
    pipes: list[ps.Pipe] = []

    def make(config: Any, **kwargs: Any) -> ps.Pipe:
        pipe = ps.pipe(config, **kwargs)
        pipes.append(pipe)
        return pipe

    yield make
    for pipe in pipes:
        pipe.close()


def pause(rec: Recording, pipe: ps.Pipe, node: str = "main") -> Callable[[int], None]:
    """Close ``rec``'s gate and return a function that waits until ``n`` items are queued."""
    rec.gate.clear()

    def until_queued(n: int) -> None:
        wait_until(lambda: pipe.stats()[node]["queued"] == n)

    return until_queued


def occupy(
    rec: Recording, pipe: ps.Pipe, item: dict[str, Any] | None = None, node: str = "main"
) -> tuple[Any, Callable[[int], None]]:
    """Pause ``rec``, send one item and wait until it is inside the backend, so that the instance
    is busy and later items queue. Returns its future and a function that waits until ``n`` items
    are queued."""
    until_queued = pause(rec, pipe, node)
    future = pipe.submit(item if item is not None else {"data": "first"})
    assert rec.entered.acquire(timeout=10), "the first item never reached the backend"
    return future, until_queued
