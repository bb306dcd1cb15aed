"""The Ray Serve deployments of a pipeserve application (NOTE [ray plan]): the ingress (the Open
Inference Protocol app of ``pipeserve serve``, and a ``call`` method for handles), the parts that
hold nodes of the graph, and the board that gathers every replica's figures.

Imports Ray; :mod:`pipeserve.ray` imports this module only when an application is built.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import Future
from typing import Any

from ray import serve

import pipeserve as ps

from .. import InputError, PipeServeError, oip
from ..metrics import RequestTally, WatchedModel, server_registry
from ..server import HttpApp, Repository, ServerState
from . import hop
from .board import Board, ReplicaSnapshot, merged_exposition, part_families, sum_counters
from .plan import RESERVED_DEPLOYMENT, AppPlan, DeploymentPlan
from .transfer import Change, changes

__all__ = ["build"]

log = logging.getLogger("pipeserve.ray")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Reply = Change | BaseException

BOARD = RESERVED_DEPLOYMENT  # the board deployment's name in every application
BOARD_TIMEOUT = 5.0  # seconds a scrape waits for the board


# ------------------------------------------------------------------------------------------ shared
def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - outside a replica (tests): a process-unique id
        return f"local-{id(threading.current_thread()):x}"


def _loopback_if_local() -> None:
    """On a cluster whose node listens on loopback only (a machine's own, as in the tests), have
    this replica's inter-deployment gRPC server bind loopback too: Ray Serve 2.60 binds it to
    every interface. Elsewhere nothing changes."""
    try:
        import ray.util
        from ray.serve._private import replica
    except ImportError:  # pragma: no cover - another Ray layout: nothing to adjust
        return
    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if add_port is None or getattr(add_port, "_pipeserve_loopback", False):
        return
    if ray.util.get_node_ip_address() != "127.0.0.1":
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        return add_port(server, address)

    on_loopback._pipeserve_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback


class _Reporter:
    """Sends the replica's snapshot to the board every ``interval`` seconds (NOTE [replica
    metrics]), from a task of the replica's event loop (where handles are meant to be called);
    the snapshot is taken on a worker thread. Build it inside the loop; :meth:`stop` ends it."""

    def __init__(self, board: Any, snapshot: Callable[[], ReplicaSnapshot], interval: float) -> None:
        self.board = board
        self.snapshot = snapshot
        self.interval = interval
        self._warned = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish(await asyncio.to_thread(self.snapshot))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - figures are best effort; serving goes on
                if not self._warned:
                    log.warning("pipeserve: cannot report metrics to the board: %r", exc)
                    self._warned = True

    async def publish(self, snapshot: ReplicaSnapshot) -> None:
        """Put ``snapshot`` on the board and wait until it is there."""
        await self.board.put.remote(snapshot)

    def stop(self, replica: str) -> None:
        self._task.cancel()
        try:
            self.board.remove.remote(replica)
        except Exception:  # noqa: BLE001 - the application may be going away as a whole
            pass


async def _settle(futures: list[Future[Any]]) -> None:
    """Wait until every future is done; if the waiting task is cancelled, cancel them (items
    still queued are dropped) and re-raise."""
    waiting = [asyncio.wrap_future(future) for future in futures]
    if not waiting:
        return
    try:
        await asyncio.wait(waiting)
    except asyncio.CancelledError:
        for future in futures:
            future.cancel()
        raise


def _node_tables(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(node, table) of a configuration dict (the ingress's are node dicts)."""
    return [(name, table) for name, table in config.items() if isinstance(table, Mapping) and name != "global"]


def _replies(futures: list[Future[Any]], items: list[dict[str, Any]], before: list[dict[str, Any]]) -> list[Reply]:
    replies: list[Reply] = []
    for future, item, old in zip(futures, items, before, strict=True):
        error = future.exception() if not future.cancelled() else ps.PipeClosed("cancelled")
        if error is not None:
            replies.append(error)
            continue
        updated, removed = changes(old, item)
        updated.pop("node_name", None)
        replies.append((updated, tuple(k for k in removed if k != "node_name")))
    return replies


# ------------------------------------------------------------------------------------------ ingress
class PipeIngress:
    """An ingress replica: every model of the application, served over the Open Inference
    Protocol (the ASGI app of ``pipeserve serve``) and to handles (:meth:`call`).

    Args:
        plan: this deployment's plan; link: the application's hop token; parts: the parts'
        handles by name; board: the board's handle; options: ``timeout`` (default deadline, s),
        ``metrics`` (None/True/False), ``metrics_interval`` (s), ``max_body``, ``drain_timeout``.
    """

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        plan: DeploymentPlan,
        link: str,
        parts: Mapping[str, Any],
        board: Any,
        options: Mapping[str, Any],
    ) -> None:
        self.plan = plan
        self.link = link
        self.options = dict(options)
        self.replica = _replica_id()
        self.board = board
        _loopback_if_local()
        hop.connect(link, parts)
        for fitted in plan.fitted:
            log.info("pipeserve: %s (the replica's %d cores)", fitted, plan.cores)
        # Built off the event loop: a hop's start waits (blocking) for its part to answer.
        self.repository = await asyncio.to_thread(self._load)
        self.state = ServerState(self.repository, timeout=self.options.get("timeout"))
        self.state.started = True
        self.http = HttpApp(self.state, max_body=int(self.options.get("max_body", 64 << 20)), metrics=False)
        self.registry = None
        if self.options.get("metrics") is not False:
            self.registry = server_registry(self._watched)
        self.reporter = (
            _Reporter(board, self._snapshot, float(self.options.get("metrics_interval", 1.0)))
            if self.registry is not None
            else None
        )

    def _load(self) -> Repository:
        repository = Repository(
            [],
            configs=self.plan.models,
            cpu_count=self.plan.cores,
            drain_timeout=float(self.options.get("drain_timeout", 30.0)),
        )
        repository.load_all()
        return repository

    def _watched(self) -> list[WatchedModel]:
        return [WatchedModel(m.name, m.pipe, m.tally, m.entry) for m in self.repository.ready_models()]

    def _snapshot(self) -> ReplicaSnapshot:
        families = list(self.registry.collect()) if self.registry is not None else []
        counters = [model.counters() for model in self.repository.ready_models()]
        return ReplicaSnapshot(self.replica, self.plan.name, time.time(), families, counters)

    def __serve_build_asgi_app__(self) -> Any:
        return _ApplicationView(self)

    async def call(self, model: str | None, items: list[dict[str, Any]], timeout: float | None) -> list[Reply]:
        """Run ``items`` through model ``model`` (None: the only one); each item's changes, or
        its error."""
        if model is None:
            ready = self.repository.ready_models()
            if len(ready) != 1:
                raise InputError(f"this application serves {[m.name for m in ready]}: name the model")
            served = ready[0]
        else:
            served = self.repository.get(model)
        before = [dict(item) for item in items]
        start = time.perf_counter_ns()
        served.tally.admitted()
        try:
            futures = served.pipe.submit_many(items, timeout=self.state.timeout if timeout is None else timeout)
        except PipeServeError as exc:
            served.tally.failed((time.perf_counter_ns() - start) / 1e9, exc)
            return [exc] * len(items)
        try:
            await _settle(futures)
        except asyncio.CancelledError as exc:
            served.tally.failed((time.perf_counter_ns() - start) / 1e9, exc)
            raise
        replies = _replies(futures, items, before)
        seconds = (time.perf_counter_ns() - start) / 1e9
        failed = next((r for r in replies if isinstance(r, BaseException)), None)
        if failed is None:
            served.tally.served(seconds, len(items))
        else:
            served.tally.failed(seconds, failed)
        return replies

    def models(self) -> list[str]:
        """The models this replica serves."""
        return [m.name for m in self.repository.ready_models()]

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose pipes are unhealthy (an instance dead or
        stuck) is restarted. A hop's instance waits on its part as long as the part takes (a
        backlog, a cold start): it counts only if it died, never as stuck."""
        if self.state.draining or not self.repository.ready_models():
            raise RuntimeError("pipeserve: this replica serves no model")
        for model in self.repository.ready_models():
            hops = {n for n, t in _node_tables(self.plan.models.get(model.name, {})) if t.get("backend") == "RayHop"}
            for name, node in model.pipe.health().nodes.items():
                if name in hops:
                    healthy = any(i.alive for i in node.instances) and not any(i.broken for i in node.instances)
                else:
                    healthy = node.ok
                if not healthy:
                    raise RuntimeError(f"pipeserve: model {model.name!r}, node {name!r} is not healthy")

    def __del__(self) -> None:
        reporter = getattr(self, "reporter", None)
        if reporter is not None:
            reporter.stop(self.replica)
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.close(float(self.options.get("drain_timeout", 30.0)))
        hop.disconnect(getattr(self, "link", ""))


class _ApplicationView:
    """The ingress's ASGI app: ``pipeserve serve``'s, except that ``/metrics`` and Triton's
    statistics cover every replica of the application (NOTE [replica metrics]), and paths are
    taken relative to the route prefix."""

    def __init__(self, ingress: PipeIngress) -> None:
        self.ingress = ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root = scope.get("root_path") or ""
            if root and scope["path"].startswith(root):
                scope = dict(scope, path=scope["path"][len(root) :] or "/", root_path="")
            parts = scope["path"].strip("/").split("/")
            if scope["method"] == "POST" and parts[:3] == ["v2", "repository", "models"]:
                # One replica would load or unload alone, and a new configuration would skip the
                # plan (its placements): on Ray the application is redeployed instead.
                message = "loading and unloading models is not served on Ray: redeploy the application"
                await _send(send, 501, oip.error_body(message), "application/json")
                return
            if scope["method"] == "GET":
                if parts == ["metrics"] or (parts[:2] == ["v2", "models"] and parts[-1] == "stats"):
                    await self._aggregate(parts, scope, receive, send)
                    return
        await self.ingress.http(scope, receive, send)

    async def _aggregate(self, parts: list[str], scope: Scope, receive: Receive, send: Send) -> None:
        ingress = self.ingress
        if ingress.registry is None:
            if parts == ["metrics"]:
                await _send(send, 404, oip.error_body("metrics are off"), "application/json")
            else:
                await ingress.http(scope, receive, send)
            return
        try:
            snapshots = await asyncio.wait_for(_board_snapshots(ingress.board), BOARD_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a partial answer would mislead: say so instead
            message = f"the application's metrics board did not answer: {type(exc).__name__}"
            await _send(send, 503, oip.error_body(message), "application/json")
            return
        own = await asyncio.to_thread(ingress._snapshot)
        if ingress.reporter is not None:
            # On the board before the answer leaves: a scrape that another replica answers next
            # never shows this replica's counters lower than this one did.
            await asyncio.wait_for(ingress.reporter.publish(own), BOARD_TIMEOUT)
        snapshots = [s for s in snapshots if s.replica != own.replica] + [own]
        if parts == ["metrics"]:
            body, content_type = await asyncio.to_thread(merged_exposition, snapshots)
            await _send(send, 200, body, content_type)
            return
        names = ingress.models()
        if len(parts) >= 4:  # v2/models/{m}[/versions/1]/stats: one model
            if (
                parts[2] not in names
                or (len(parts) == 6 and parts[3:5] != ["versions", "1"])
                or len(parts) not in (4, 6)
            ):
                await ingress.http(scope, receive, send)  # its 404s and errors
                return
            names = [parts[2]]
        elif len(parts) != 3:
            await ingress.http(scope, receive, send)
            return
        counters = [c for s in snapshots if s.deployment == ingress.plan.name for c in s.counters]
        document = oip.model_statistics([sum_counters(name, counters) for name in names])
        await _send(send, 200, json.dumps(document, separators=(",", ":")).encode(), "application/json")


async def _board_snapshots(board: Any) -> list[ReplicaSnapshot]:
    snapshots: list[ReplicaSnapshot] = await board.snapshots.remote()
    return snapshots


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------ parts
class PipePart:
    """A part replica: a pipe of the nodes placed on this deployment, each an entry, run for the
    hops of every ingress replica (NOTE [ray hops])."""

    async def __init__(self, plan: DeploymentPlan, board: Any, options: Mapping[str, Any]) -> None:  # type: ignore[misc]
        self.plan = plan
        self.options = dict(options)
        self.replica = _replica_id()
        _loopback_if_local()
        for fitted in plan.fitted:
            log.info("pipeserve: %s (the replica's %d cores)", fitted, plan.cores)
        ((self.model, config),) = plan.models.items()
        self.pipe = await asyncio.to_thread(ps.pipe, dict(config), budget=ps.CpuBudget(plan.cores))
        self.registry = None
        self.reporter = None
        if self.options.get("metrics") is not False:
            tally = RequestTally()  # a part takes no requests of its own: nothing counts here
            self.registry = server_registry(lambda: [WatchedModel(self.model, self.pipe, tally, None)])
            self.reporter = _Reporter(board, self._snapshot, float(self.options.get("metrics_interval", 1.0)))

    def _snapshot(self) -> ReplicaSnapshot:
        families = part_families(self.registry.collect()) if self.registry is not None else []
        return ReplicaSnapshot(self.replica, self.plan.name, time.time(), families, ())

    def describe(self, node: str) -> dict[str, int]:
        """The node's batch range, as its hops must batch."""
        return {"min": self.pipe.min(node), "max": self.pipe.max(node)}

    async def run(
        self, node: str, items: list[dict[str, Any]], remaining: float | None, traceparent: str | None = None
    ) -> list[Reply]:
        """Run node ``node`` on ``items`` within ``remaining`` seconds (the trace of the
        hop's batch continues here when ``traceparent`` names it); each item's changes, or its
        error."""
        for item in items:
            item["node_name"] = node  # this part's entry (an ingress's own choice is not ours)
        before = [dict(item) for item in items]
        try:
            # An untraced batch stays untraced here (not sampled again at this pipe's rate).
            futures = self.pipe.submit_many(items, timeout=remaining, trace=traceparent or False)
        except PipeServeError as exc:
            return [exc] * len(items)
        await _settle(futures)
        return _replies(futures, items, before)

    def check_health(self) -> None:
        """A part whose pipe is unhealthy is restarted by Ray Serve."""
        if not self.pipe.health().ok:
            raise RuntimeError("pipeserve: this part's pipe is not healthy")

    def __del__(self) -> None:
        if getattr(self, "reporter", None) is not None:
            self.reporter.stop(self.replica)  # type: ignore[union-attr]
        if getattr(self, "pipe", None) is not None:
            self.pipe.close(float(self.options.get("drain_timeout", 30.0)), drain=True)


# ------------------------------------------------------------------------------------------ board
class MetricsBoard:
    """The application's board: every replica's latest snapshot (NOTE [replica metrics])."""

    def __init__(self, stale_after: float) -> None:
        _loopback_if_local()
        self.board = Board(stale_after)

    # Async, so that Ray Serve runs them one at a time on the replica's event loop (its sync
    # methods run on a thread pool, concurrently): the board needs no lock.
    async def put(self, snapshot: ReplicaSnapshot) -> None:
        self.board.put(snapshot)

    async def remove(self, replica: str) -> None:
        self.board.remove(replica)

    async def snapshots(self) -> list[ReplicaSnapshot]:
        return self.board.snapshots()


# ------------------------------------------------------------------------------------------ build
def _scaling(plan: DeploymentPlan, drain_timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "max_ongoing_requests": plan.max_ongoing_requests,
        # Ray stops a replica this long after it asked it to finish: the pipes' drain fits in it.
        "graceful_shutdown_timeout_s": drain_timeout + 5.0,
        "ray_actor_options": {"num_cpus": plan.num_cpus or 0.0, "num_gpus": plan.num_gpus},
    }
    if plan.autoscale is None:
        options["num_replicas"] = plan.replicas
    else:
        low, high = plan.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            # Scale out once a replica holds half the requests it takes at once.
            "target_ongoing_requests": max(1, plan.max_ongoing_requests // 2),
        }
    return options


def build(plan: AppPlan, options: Mapping[str, Any]) -> Any:
    """The Ray Serve application of ``plan``: board, parts, then the ingress bound to them."""
    interval = float(options.get("metrics_interval", 1.0))
    drain = float(options.get("drain_timeout", 30.0))
    board = (
        serve.deployment(MetricsBoard)
        .options(
            name=BOARD,
            num_replicas=1,
            max_ongoing_requests=1000,
            ray_actor_options={"num_cpus": 0},
            # Every replica reports each interval: not worth a log line each.
            logging_config={"enable_access_log": False},
        )
        .bind(max(10.0, 3 * interval))
    )
    parts = {
        part.name: serve.deployment(PipePart)
        .options(name=part.name, **_scaling(part, drain))
        .bind(part, board, dict(options))
        for part in plan.parts
    }
    ingress_class = serve.ingress()(PipeIngress)
    return (
        serve.deployment(ingress_class)
        .options(name=plan.ingress.name, **_scaling(plan.ingress, drain))
        .bind(plan.ingress, plan.link, parts, board, dict(options))
    )
