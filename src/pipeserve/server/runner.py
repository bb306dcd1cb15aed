"""Running a server: HTTP (uvicorn) and gRPC (grpc.aio) in one process, one event loop.

NOTE [server shutdown]
On SIGTERM or SIGINT (or :meth:`Server.stop`) the server stops in order: readiness turns false
at once (load balancers stop sending), both listeners stop accepting, requests in flight finish
within ``drain_timeout`` (uvicorn's graceful shutdown, gRPC's grace), then every model's pipe is
closed with ``drain=True`` within the same bound, which fails with PipeClosed whatever could not
finish. The process then exits 0. A model that fails to load at start stops the server before it
listens, with the configuration error and a non-zero exit: never a half-served repository.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from .http import HttpApp
from .repository import Repository
from .state import ServerState

__all__ = ["Server"]

log = logging.getLogger("pipeserve.server")


class Server:
    """A pipeserve server over one or more model configurations.

    Args:
        sources: configuration files, folders of them (model repositories), or ``ocr``.
        host: the address to bind (loopback unless told otherwise).
        port: the HTTP port (0: any free port; see :attr:`port` once started).
        grpc_port: the gRPC port (0: any free port; None: no gRPC).
        timeout: a default request deadline in seconds.
        drain_timeout: the bound on finishing in-flight work at shutdown, in seconds.
        access_log: log one line per HTTP request.
        cpu_count: cores the models share (default: the machine's).
        max_body: the largest HTTP request body, in bytes.
        metrics: serve ``GET /metrics`` (None: when prometheus-client is installed).
        trace_rate: the share of requests traced, for every model (None: each one's own).
        trace_file: the JSON-lines file traces go to (None: OpenTelemetry when configured, else
            each pipe's ``trace_file``).

    Example::

        with Server(["model.toml"], port=0, grpc_port=0) as server:
            print(server.url, server.grpc_url)
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        grpc_port: int | None = 8001,
        timeout: float | None = None,
        drain_timeout: float = 30.0,
        access_log: bool = False,
        cpu_count: int | None = None,
        max_body: int = 64 * 1024 * 1024,
        metrics: bool | None = None,
        trace_rate: float | None = None,
        trace_file: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.grpc_port = grpc_port
        self.drain_timeout = drain_timeout
        self.repository = Repository(
            sources, cpu_count=cpu_count, drain_timeout=drain_timeout, trace_rate=trace_rate, trace_file=trace_file
        )
        self.state = ServerState(self.repository, timeout=timeout, access_log=access_log)
        self.app = HttpApp(self.state, max_body=max_body, metrics=metrics)
        self._uvicorn: Any = None
        self._grpc: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint, as tritonclient takes it."""
        return f"{self.host}:{self.port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    # ----------------------------------------------------------------- running
    def run(self) -> None:
        """Load the models, serve until SIGTERM/SIGINT, drain and return (NOTE [server shutdown]).

        Raises:
            PipeServeError: a model failed to load (nothing was served).
        """
        _run(self._main(signals=True))

    def start(self, timeout: float = 120.0) -> Server:
        """Serve from a background thread; returns once ready (for tests and embedding).

        Raises:
            PipeServeError: a model failed to load. TimeoutError: not ready in time.
        """
        self._thread = threading.Thread(target=self._background, name="pipeserve-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Shut down as on SIGTERM and wait for it (NOTE [server shutdown]). Idempotent."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._begin_shutdown)
            except RuntimeError:  # the loop already stopped
                pass
        if self._thread is not None:
            self._thread.join(self.drain_timeout + 30.0)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _background(self) -> None:
        try:
            _run(self._main(signals=False))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
        finally:
            self._started.set()

    async def _main(self, *, signals: bool) -> None:
        import uvicorn

        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.repository.load_all)
        http_socket = _bind(self.host, self.port)
        self.port = http_socket.getsockname()[1]
        try:
            if self.grpc_port is not None:
                await self._start_grpc()
            config = uvicorn.Config(
                self.app,
                lifespan="off",
                http="httptools",
                loop="none",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=int(self.drain_timeout) or 1,
                timeout_keep_alive=30,
                proxy_headers=False,  # a middleware on every request; we bind loopback by default
                server_header=False,
            )
            self._uvicorn = _uvicorn_server(config)
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.add_signal_handler(sig, self._begin_shutdown)
            self.state.started = True
            self._loop.call_soon(self._started.set)
            await self._uvicorn.serve(sockets=[http_socket])
        finally:
            http_socket.close()
            await self._finish()

    async def _start_grpc(self) -> None:
        import grpc

        from .grpc import MAX_MESSAGE, add_service

        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        self._grpc = grpc.aio.server(options=options)
        add_service(self._grpc, self.state)
        port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        if not port:
            raise OSError(f"cannot bind gRPC to {self.host}:{self.grpc_port}")
        self.grpc_port = port
        await self._grpc.start()

    def _begin_shutdown(self) -> None:
        """Readiness off, then stop accepting; in-flight requests finish (NOTE [server shutdown])."""
        if self.state.draining:
            if self._uvicorn is not None:
                self._uvicorn.force_exit = True  # a second signal: stop now
            return
        self.state.draining = True
        log.info("shutting down: finishing in-flight requests within %s s", self.drain_timeout)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    async def _finish(self) -> None:
        started = time.monotonic()
        self.state.draining = True
        if self._grpc is not None:
            await self._grpc.stop(self.drain_timeout)
        left = max(1.0, self.drain_timeout - (time.monotonic() - started))
        await asyncio.to_thread(self.repository.close, left)
        self.state.live = False


def _uvicorn_server(config: Any) -> Any:
    """uvicorn's server with its signal handling left to us (NOTE [server shutdown])."""
    import contextlib

    import uvicorn

    class Quiet(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # older uvicorn
            pass

        def capture_signals(self) -> Any:  # newer uvicorn
            return contextlib.nullcontext()

    return Quiet(config)


def _run(main: Any) -> None:
    """Run ``main`` on uvloop where it is installed (the faster loop), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (the event loop sets TCP_NODELAY on each connection)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
