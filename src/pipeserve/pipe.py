"""The public facade: build a pipe from a configuration and call it from any thread.

Example::

    import pipeserve as ps

    with ps.pipe({"backend": "Identity", "instance_num": 2, "max": 8}) as pipe:
        item = {"data": 42}
        pipe(item)                      # blocks; item["result"] == 42
        future = pipe.submit({"data": 1})
        assert future.result()["result"] == 1
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from .config import get_float, load_config
from .errors import InputError, PipeClosed
from .events import Event
from .executor import Executor
from .graph import COMPUTE, Graph
from .node import Node
from .request import DeadlineWatch, Request

__all__ = ["Pipe", "pipe"]

Item = dict[str, Any]
Config = str | os.PathLike[str] | Mapping[str, Any]


def pipe(config: Config, *, timeout: float | None = None, cpu_count: int | None = None) -> Pipe:
    """Build a :class:`Pipe` from a TOML path, a flat dict or a ``{node: {...}}`` dict.

    Args:
        config: the configuration (SPEC 2).
        timeout: default request deadline in seconds (overrides the ``timeout`` key, which
            is in milliseconds like every duration in configurations).
        cpu_count: cores to share among compute instances (default: the machine's).

    Raises:
        ConfigError: the configuration is invalid; MissingDependencyError: a backend's
            optional package is absent.
    """
    return Pipe(config, timeout=timeout, cpu_count=cpu_count)


class Pipe:
    """A running pipe. Thread-safe; see the module docstring for an example."""

    def __init__(self, config: Config, *, timeout: float | None = None, cpu_count: int | None = None) -> None:
        """See :func:`pipe`."""
        self.config = load_config(config)
        self.timeout = timeout or None
        # Per-entry default deadlines: the call's timeout, else the pipe's, else the entry
        # node's ``timeout`` key (milliseconds; a top-level key applies to every node).
        self._entry_timeouts = {
            name: timeout or get_float(node.params, "timeout", 0.0, node=name, minimum=0.0) / 1e3 or None
            for name, node in self.config.nodes.items()
        }
        self.graph = Graph.from_config(self.config.nodes)
        self._nodes: dict[str, Node] = {}
        try:
            for name, node in self.graph.nodes.items():
                if node.kind == COMPUTE and node.physical == name:
                    self._nodes[name] = Node(self.config.nodes[name], cpu_count=cpu_count)
            # The cores are one budget for the whole pipe: stages run at the same time.
            instances = sum(node.instance_count for node in self._nodes.values())
            for scheduled in self._nodes.values():
                scheduled.share_cpu((cpu_count or os.cpu_count() or 1) // instances)
                scheduled.start()
            self._executor = Executor(self.graph, self._nodes)
        except BaseException:
            for started in self._nodes.values():
                started.close()
            raise
        # Entries: the roots that are not only there as the target of a Jump/MapReduce.
        targets = {node.jump for node in self.graph.nodes.values()}
        self._entries = tuple(r for r in self.graph.roots if r not in targets) or self.graph.roots
        self._deadlines = DeadlineWatch()
        self._closed = False
        self._close_lock = threading.Lock()

    # ----------------------------------------------------------------- calls
    def __call__(self, item: Item | list[Item], *, timeout: float | None = None) -> Any:
        """Process ``item`` (or a list of items) and block until done.

        The item's dict is updated in place: ``result`` and any keys the nodes set. For a list,
        every item gets its own outcome; once all are done, the first failing item's error (in
        list order) is raised, the others being updated.

        Returns:
            the item (or the list) that was passed in.

        Raises:
            InputError: not a dict, no ``data``, unknown ``node_name``.
            RequestError: the request failed (BackendError, RequestTimeout, Overloaded,
                PipeClosed...).
        """
        if isinstance(item, list):
            return self._call_many(item, timeout)
        event = item.get("event") if isinstance(item, dict) else None
        if isinstance(event, Event):
            future = self.submit(item, timeout=timeout)
            future.add_done_callback(lambda done: event.set_outcome(done.exception()))
            return item
        request = self._admit(item, timeout)
        request.caller = threading.get_ident()
        # A request with a deadline is never run inline: its caller must be free to time out.
        self._executor.start(request, inline=request.deadline is None)
        self._wait(request)
        return item

    def submit(self, item: Item, *, timeout: float | None = None) -> Future[Item]:
        """Queue ``item`` and return a Future resolving to it (updated) or to the error.

        Raises:
            InputError, Overloaded, PipeClosed: the item was not admitted.
        """
        request = self._admit(item, timeout)
        future = request.attach_future()
        self._deadlines.watch(request)
        self._executor.start(request)
        return future

    async def acall(self, item: Item, *, timeout: float | None = None) -> Item:
        """Process ``item`` without blocking the event loop; returns the updated item."""
        return await asyncio.wrap_future(self.submit(item, timeout=timeout))

    def _call_many(self, items: list[Item], timeout: float | None) -> list[Item]:
        requests = [self._admit(item, timeout) for item in items]
        caller = threading.get_ident()
        for request in requests:
            request.caller = caller
        self._executor.start_many(requests)
        first_error: BaseException | None = None
        for request in requests:
            try:
                self._wait(request)
            except Exception as exc:  # noqa: BLE001 - every item is waited for first
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return items

    def _admit(self, item: Any, timeout: float | None) -> Request:
        if self._closed:
            raise PipeClosed("the pipe is closed")
        if not isinstance(item, dict):
            raise InputError(f"an item must be a dict with a 'data' key, got {type(item).__name__}")
        if "data" not in item:
            raise InputError(f"the item has no 'data' key (keys: {sorted(map(str, item))})")
        entry = item.get("node_name")
        if entry is None:
            if len(self._entries) != 1:
                raise InputError(f"this pipe has several entries; set 'node_name' to one of {list(self._entries)}")
            entry = self._entries[0]
        elif entry not in self.graph.nodes:
            raise InputError(f"unknown node_name {entry!r}; entries: {list(self._entries)}")
        else:
            self.graph.plan(entry)  # InputError if this node cannot be an entry
        seconds = self._entry_timeouts[entry] if timeout is None else timeout
        deadline = time.monotonic() + seconds if seconds else None
        return Request(item, deadline, entry)

    @staticmethod
    def _wait(request: Request) -> None:
        remaining = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        if not request.wait(remaining):
            request.time_out()
            request.wait(None)
        if request.error is not None:
            raise request.error

    # ----------------------------------------------------------------- introspection
    def max(self, node_name: str | None = None) -> int:
        """The largest batch the entry node runs."""
        return self._node(node_name).batch_range[1]

    def min(self, node_name: str | None = None) -> int:
        """The smallest batch the entry node runs (always 1 for a valid pipe)."""
        return self._node(node_name).batch_range[0]

    def _node(self, name: str | None) -> Node:
        if name is None:
            name = self._entries[0]
        node = self._executor.scheduler(name) if name in self.graph.nodes else None
        if node is None:
            raise InputError(f"no scheduled node {name!r}; nodes: {list(self._nodes)}")
        return node

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-node statistics: queued, running, batches, batch-size histogram, release
        reasons, mean queue and compute time, errors, expired, rejected."""
        return {name: node.stats() for name, node in self._nodes.items()}

    # ----------------------------------------------------------------- lifecycle
    def close(self, timeout: float = 10.0) -> None:
        """Refuse new items, fail queued ones with PipeClosed, let running batches finish,
        close every backend. Idempotent (NOTE [shutdown])."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for node in self._nodes.values():
            node.close(timeout)
        self._deadlines.close()

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<pipeserve.Pipe nodes={list(self._nodes)} {state}>"
