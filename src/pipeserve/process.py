"""Process instances: ``instance_type = "process"`` for GIL-bound Python backends.

NOTE [process instances]
Each instance of such a node is a proxy owning one worker process (started with ``spawn``, safe
beside threads). The worker imports the modules named in ``imports`` and those that registered
the node's backends and filters in the parent (a package, a test module; the script itself runs
again as ``__mp_main__``, its top level registering what it registers), so that they exist
there too; a backend defined interactively (no file to import) is refused with what to do. It
then builds the node's backend expression with the same parameters, and serves
batches over a pipe. Items travel pickled, except numpy arrays of at least ``_SHM_MIN`` bytes,
which travel through shared memory in both directions (one copy in, one copy out). Only the keys a
backend changed come back. A worker that dies (a crash, ``os._exit``, the OOM killer) fails the
batch it was running with a BackendError saying so, and a new worker is started for the next
batch. Backend exceptions come back as themselves when they can be pickled.
"""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .backend import Backend, Options, PartialFailure, no_deadline, no_trace
from .config import get_list
from .errors import ConfigError, WorkerDied

__all__ = ["ProcessBackend", "pid_of"]

_SHM_MIN = 64 * 1024  # bytes: smaller arrays are cheaper to pickle
Item = dict[str, Any]


class _Shared:
    """A numpy array placed in shared memory: what travels instead of the array."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


def _is_big_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "nbytes") and value.nbytes >= _SHM_MIN


def _pack(items: list[Item], blocks: list[Any]) -> list[Item]:
    """Replace big numpy arrays (top-level values, or inside a list of inputs) by shared blocks."""
    from multiprocessing import shared_memory

    def place(value: Any) -> Any:
        if _is_big_array(value):
            import numpy as np

            block = shared_memory.SharedMemory(create=True, size=value.nbytes)
            blocks.append(block)
            np.ndarray(value.shape, value.dtype, buffer=block.buf)[...] = value
            return _Shared(block.name, tuple(value.shape), value.dtype.str)
        if isinstance(value, list) and any(_is_big_array(v) for v in value):
            return [place(v) for v in value]
        return value

    return [{key: place(value) for key, value in item.items()} for item in items]


def _unpack(items: list[Item], blocks: list[Any], copy: bool) -> list[Item]:
    """Map shared blocks back to arrays (copies when ``copy``; views kept open otherwise)."""
    from multiprocessing import shared_memory

    def take(value: Any) -> Any:
        if isinstance(value, _Shared):
            import numpy as np

            block = shared_memory.SharedMemory(name=value.name)
            blocks.append(block)
            array = np.ndarray(value.shape, np.dtype(value.dtype), buffer=block.buf)
            return array.copy() if copy else array
        if isinstance(value, list) and any(isinstance(v, _Shared) for v in value):
            return [take(v) for v in value]
        return value

    return [{key: take(value) for key, value in item.items()} for item in items]


def _release(blocks: list[Any], unlink: bool) -> None:
    for block in blocks:
        try:
            block.close()
            if unlink:
                block.unlink()
        except (OSError, BufferError):  # a view still alive keeps the mapping; the OS reclaims it
            pass
    blocks.clear()


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))  # it must come back as itself on the other side
        return exc
    except Exception:  # noqa: BLE001 - fall back to a description
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(connection: Connection, expression: str, params: dict[str, Any], options: Options, homes: list[str]) -> None:
    """The worker process's main loop. ``homes``: the modules that registered the backend in the
    parent (see :func:`_import_homes`)."""
    from .registry import build
    from .syntax import parse_backend

    try:
        for module in get_list(params, "imports", node=options.node):
            importlib.import_module(module)
        _import_homes(homes, options.node)
        backend = build(parse_backend(expression, node=options.node), params, options)
        connection.send(("ready", backend.min(), backend.max()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        connection.send(("failed", _picklable(exc), traceback.format_exc()))
        return
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent went away
            backend.close()
            return
        except Exception as exc:  # noqa: BLE001 - a batch this process cannot unpickle fails alone
            connection.send(("error", _picklable(exc)))
            continue
        if message[0] == "close":
            backend.close()
            return
        inbound: list[Any] = []
        items = _unpack(message[1], inbound, copy=False)
        before = [dict(item) for item in items]
        outbound: list[Any] = []
        try:
            failures: dict[int, BaseException] = {}
            try:
                backend.forward(items)
            except PartialFailure as partial:
                failures = {i: _picklable(e) for i, e in partial.failures.items()}
            changes = [
                ({k: v for k, v in item.items() if k not in old or v is not old[k]}, [k for k in old if k not in item])
                for item, old in zip(items, before, strict=True)
            ]
            packed = _pack([changed for changed, _ in changes], outbound)
            connection.send(("done", packed, [removed for _, removed in changes], failures))
            reply = connection.recv()  # the parent copied the arrays out: the blocks can go
            assert reply == ("released",)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            connection.send(("error", _picklable(exc)))
        finally:
            del items, before
            _release(inbound, unlink=False)
            _release(outbound, unlink=True)


def _import_homes(homes: list[str], node: str) -> None:
    """Import the modules that registered the node's backends in the parent, so that they
    register here too. ``__main__`` is already in: a spawned worker runs the parent's script as
    ``__mp_main__`` (its top level, not its ``if __name__ == "__main__":`` block).

    Raises:
        ConfigError: a module that this process cannot import, saying what to do.
    """
    for module in homes:
        if module == "__main__":
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(
                f"the worker process cannot import {module!r}, where the backend was registered ({exc!r}); "
                "make it importable (on sys.path), or list a module that registers it in 'imports'",
                node=node,
            ) from exc


def _homes_of(expression: str, node: str) -> list[str]:
    """The modules a worker must import for ``expression`` (registry.home_modules).

    Raises:
        ConfigError: a backend registered where no other process can find it (an interactive
            session or a notebook: ``__main__`` without a file).
    """
    from .registry import home_modules
    from .syntax import parse_backend

    homes = home_modules(parse_backend(expression, node=node))
    main = sys.modules.get("__main__")
    if "__main__" in homes and getattr(main, "__file__", None) is None:
        raise ConfigError(
            "the backend is defined in an interactive session (a notebook cell or a REPL), which a worker "
            "process cannot import: define it in a module and register it there (or list that module in "
            "'imports'), or use thread instances",
            node=node,
        )
    return homes


class ProcessBackend(Backend):
    """The in-process proxy of a process instance (NOTE [process instances])."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.process: Any = None
        self.connection: Connection | None = None
        self.range = (1, 1)
        self.restarts = 0
        self.starting = False  # a worker is being started within a batch
        self.on_ready: Callable[[], None] | None = None  # told when such a start ends

    def _portable_options(self) -> Options:
        """The options without the readers of this process's batches (they cannot travel)."""
        return replace(self.options, remaining=no_deadline, traceparent=no_trace)

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        self.plain_params = {k: v for k, v in params.items() if k != "instance_type"}
        self.homes = _homes_of(self.expression, options.node)
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(
            target=_serve,
            # The deadline and trace readers stay here: they read this process's batches.
            args=(child, self.expression, self.plain_params, self._portable_options(), self.homes),
            name=f"pipeserve-{self.options.node}-{self.options.instance}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.connection = parent
        try:
            message = parent.recv()
        except EOFError:
            raise ConfigError(
                f"the worker process of instance {self.options.instance} died while starting "
                f"(exit code {self._exit_code()})",
                node=self.options.node,
            ) from None
        if message[0] == "failed":
            self.process.join(5)
            raise ConfigError(
                f"instance {self.options.instance} failed to initialise in its process: {message[1]!r}\n{message[2]}",
                node=self.options.node,
            )
        self.range = (message[1], message[2])

    def _exit_code(self) -> Any:
        self.process.join(1)
        return self.process.exitcode

    def min(self) -> int:
        return self.range[0]

    def max(self) -> int:
        return self.range[1]

    def forward(self, items: list[Item]) -> None:
        if self._dead():
            self._restart()
        assert self.connection is not None
        outbound: list[Any] = []
        inbound: list[Any] = []
        try:
            # Pickled here first: an item that cannot be pickled fails as itself, not as a dead worker.
            payload = ForkingPickler.dumps(("forward", _pack(items, outbound)))
            try:
                self.connection.send_bytes(payload)
            except (BrokenPipeError, ConnectionResetError):
                self._restart()  # it died between batches, unseen: once more on a new worker
                self.connection.send_bytes(payload)
            raw = self.connection.recv_bytes()
            try:
                reply = pickle.loads(raw)
            except Exception as exc:
                # The worker waits for "released" whatever this side makes of its answer.
                self.connection.send(("released",))
                raise RuntimeError(f"the worker's answer could not be unpickled here: {exc!r}") from exc
            if reply[0] == "error":
                raise reply[1]
            _, packed, removed, failures = reply
            try:
                changes = _unpack(packed, inbound, copy=True)
            finally:
                self.connection.send(("released",))
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._exit_code()
            self._discard()
            raise WorkerDied(
                f"the worker process of instance {self.options.instance} died (exit code {code}); "
                "a new one is started for the next batch"
            ) from None
        finally:
            _release(inbound, unlink=False)
            _release(outbound, unlink=True)
        for item, changed, gone in zip(items, changes, removed, strict=True):
            item.update(changed)
            for key in gone:
                item.pop(key, None)
        if failures:
            raise PartialFailure(failures)

    def _dead(self) -> bool:
        """No worker, or one that has exited (its sentinel is ready even while ``is_alive``, which
        waits on the process, still lags)."""
        process = self.process
        return process is None or not process.is_alive() or bool(wait([process.sentinel], 0))

    def _restart(self) -> None:
        """A new worker in place of a dead one; the watchdog leaves the batch alone meanwhile and
        counts its time from when the worker is ready (NOTE [hung backends])."""
        self._discard()
        self.restarts += 1
        self.starting = True
        try:
            self._start()
        finally:
            self.starting = False
            if self.on_ready is not None:
                self.on_ready()

    def _discard(self) -> None:
        """Forget the current worker, killing it if it somehow still runs."""
        process, self.process = self.process, None
        if process is not None and process.is_alive():
            process.kill()
            process.join(5)
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def kill(self) -> None:
        """Kill the worker process now (a batch that hangs, NOTE [hung backends] in
        :mod:`pipeserve.workers`): the batch it runs fails, the next batch starts a new one."""
        process = self.process
        if process is not None and process.is_alive():
            process.kill()

    def close(self) -> None:
        if self.process is None:
            return
        try:
            assert self.connection is not None
            self.connection.send(("close",))
        except (OSError, BrokenPipeError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.connection is not None:
            self.connection.close()
        self.process = None


def pid_of(backend: Backend) -> int | None:
    """The worker's process id (for tests and diagnostics)."""
    process = getattr(backend, "process", None)
    return None if process is None else int(process.pid)
