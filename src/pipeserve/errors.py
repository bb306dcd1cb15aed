"""The exception hierarchy of pipeserve.

Every error pipeserve raises derives from :class:`PipeServeError`, and also from the
standard exception a caller would naturally catch::

    PipeServeError
    ├── ConfigError (ValueError)            bad configuration, found when the pipe is built
    │   └── UnknownNameError (KeyError too) a backend or filter name that is not registered
    ├── InputError (ValueError)             a bad item, refused before anything is queued
    ├── MissingDependencyError (ImportError) an optional package a backend needs is absent
    ├── RequestError (RuntimeError)         a request that was admitted but did not succeed
    │   ├── BackendError                    a backend raised; ``__cause__`` is the original
    │   │   └── WorkerDied                  the process of a process instance died mid-batch
    │   ├── ComputeTimeout (TimeoutError)   a batch outran the node's compute bound (reserved:
    │   │                                   the hung-backend watchdog raises it)
    │   ├── ContractError                   a backend broke its contract (wrong output count...)
    │   ├── FilterError                     the ``Error`` filter (or a user filter) rejected the item
    │   ├── Overloaded                      a bounded queue was full
    │   ├── PipeClosed                      the pipe was closed before the request finished
    │   ├── RemoteError                     a remote peer failed or could not be reached (reserved:
    │   │                                   the Remote backend raises it, naming the peer)
    │   └── RequestTimeout (TimeoutError)   the request's deadline passed
    └── RegistryError (ValueError)          a name registered twice without ``replace=True``

Every RequestError says where it happened (``node``, ``backend``, ``instance``); :func:`locate`
is the one function that attaches that location. This module imports nothing of pipeserve's own,
so every other module may import it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ComputeTimeout",
    "ConfigError",
    "ContractError",
    "FilterError",
    "InputError",
    "MissingDependencyError",
    "Overloaded",
    "PipeClosed",
    "PipeServeError",
    "RegistryError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "UnknownNameError",
    "WorkerDied",
    "locate",
    "where",
]


class PipeServeError(Exception):
    """Root of every exception pipeserve raises.

    Every one pickles as itself, location and cause included (a cause that cannot be pickled
    travels as a RuntimeError describing it): errors cross processes (process instances, Ray
    replicas) without turning into something else.
    """

    def __reduce__(self) -> tuple[object, ...]:
        # The default rebuilds by calling ``__init__`` with ``args``, which keyword-only
        # locations and BackendError's cause do not survive.
        return (_rebuild, (type(self), self.args, dict(self.__dict__), _portable(self.__cause__)))


def _rebuild(
    cls: type[PipeServeError], args: tuple[object, ...], state: dict[str, object], cause: BaseException | None
) -> PipeServeError:
    # Without ``__init__``; the timeouts derive from TimeoutError, whose layout is OSError's.
    base: type[BaseException] = OSError if issubclass(cls, OSError) else Exception
    error = base.__new__(cls, *args)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    error.__cause__ = cause
    return error


def _portable(cause: BaseException | None) -> BaseException | None:
    """``cause`` if it pickles, else a RuntimeError that describes it."""
    if cause is None:
        return None
    import pickle

    try:
        pickle.dumps(cause)
    except Exception:  # noqa: BLE001 - anything unpicklable travels as its description
        return RuntimeError(f"{type(cause).__name__}: {cause}")
    return cause


class ConfigError(PipeServeError, ValueError):
    """A configuration is invalid.

    The message names the node and key concerned and what was expected; for composition
    syntax it also shows the offending character.

    Attributes:
        node: the node concerned, or None for global problems.
        key: the configuration key concerned, or None.
    """

    def __init__(self, message: str, *, node: str | None = None, key: str | None = None) -> None:
        where = []
        if node is not None:
            where.append(f"node {node!r}")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.node = node
        self.key = key


class UnknownNameError(ConfigError, KeyError):
    """A backend or filter name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class RegistryError(PipeServeError, ValueError):
    """A registration conflicts with an existing one, or is malformed."""


class InputError(PipeServeError, ValueError):
    """An item is unusable (no ``data``, unknown ``node_name``, not a dict...).

    Raised in the caller before anything is queued, so it never costs a backend call.
    """


class MissingDependencyError(PipeServeError, ImportError):
    """An optional dependency needed by a backend is not installed.

    The message names the package (and the pipeserve extra) to install.
    """


class RequestError(PipeServeError, RuntimeError):
    """A request was admitted but did not produce a result.

    Attributes:
        node: the node where it failed, when known.
        backend: the backend that failed, when known.
        instance: the index of the instance that failed, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        backend: str | None = None,
        instance: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.backend = backend
        self.instance = instance


def _where(node: str | None, backend: str | None, instance: int | None) -> str:
    parts = []
    if node is not None:
        parts.append(f"node {node!r}")
    if backend is not None:
        parts.append(f"backend {backend!r}")
    if instance is not None:
        parts.append(f"instance {instance}")
    return ", ".join(parts)


class BackendError(RequestError):
    """A backend raised while processing the item; the original exception is ``__cause__``."""

    def __init__(
        self,
        cause: BaseException,
        *,
        node: str | None = None,
        backend: str | None = None,
        instance: int | None = None,
    ) -> None:
        where = _where(node, backend, instance)
        message = f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"{where}: {message}" if where else message,
            node=node,
            backend=backend,
            instance=instance,
        )
        self.__cause__ = cause


class ContractError(RequestError):
    """A backend broke its contract, e.g. returned 3 outputs for a batch of 4."""


class FilterError(RequestError):
    """A filter decided that the item is an error (the built-in ``Error`` filter, say)."""


class Overloaded(RequestError):
    """A bounded queue (``max_queue``) was full when the item arrived."""


class PipeClosed(RequestError):
    """The pipe was closed (or is closing) before the request could finish."""


class RequestTimeout(RequestError, TimeoutError):
    """The request's deadline (``timeout``) passed before it finished.

    An item whose deadline has passed is never handed to a backend.
    """


class WorkerDied(BackendError):
    """The worker process of a process instance died while running the batch (a crash, the OOM
    killer, ``os._exit``); a new worker is started for the next batch. Raised by the instance's
    proxy without a location; :func:`locate` adds node, backend and instance."""

    def __init__(self, message: str) -> None:
        RequestError.__init__(self, message)


class ComputeTimeout(RequestError, TimeoutError):
    """A batch ran longer than its node allows; its instance was abandoned and replaced.

    Reserved for the hung-backend watchdog; never raised yet.
    """


class RemoteError(RequestError):
    """A remote inference server (the ``Remote`` backend's peer) failed, refused a batch or could
    not be reached (NOTE [remote calls] in :mod:`pipeserve.backends.remote`).

    Attributes:
        peer: the peer's address, when known.
    """

    peer: str | None = None

    def __init__(
        self,
        message: str,
        *,
        peer: str | None = None,
        node: str | None = None,
        backend: str | None = None,
        instance: int | None = None,
    ) -> None:
        super().__init__(message, node=node, backend=backend, instance=instance)
        self.peer = peer


def locate(
    error: BaseException,
    *,
    node: str | None,
    backend: str | None = None,
    instance: int | None = None,
    context: str | None = None,
) -> RequestError:
    """``error`` as a RequestError that says where it happened.

    Two uses, one rule each:

    * at an instance (``context`` None) the location given is authoritative: a foreign exception
      becomes a BackendError naming node, backend and instance; a BackendError is rebuilt around
      its cause, keeping the stage it names (a composite's child) over ``backend``; any other
      RequestError becomes a copy of its own type whose message starts with the location.
    * above the instances (``context`` given, a walk or a sub-request) the error keeps the
      location it has and only gains what it lacks; its message starts with ``context``. A
      foreign exception becomes a BackendError naming ``node``.

    The original's ``__cause__`` is kept in every case.
    """
    if not isinstance(error, RequestError):
        return BackendError(error, node=node, backend=backend, instance=instance)
    if context is None:
        stage = error.backend or backend
        if isinstance(error, BackendError) and not isinstance(error, WorkerDied):
            cause = error.__cause__ if error.__cause__ is not None else error
            return BackendError(cause, node=node, backend=stage, instance=instance)
        return _copy(error, f"{_where(node, stage, instance)}: {error}", node, stage, instance)
    return _copy(
        error,
        f"{context}: {error}",
        error.node or node,
        error.backend or backend,
        error.instance if error.instance is not None else instance,
    )


def _copy(
    error: RequestError, message: str, node: str | None, backend: str | None, instance: int | None
) -> RequestError:
    cls = type(error)
    # Allocate without running the subclass's own __init__ (BackendError's takes a cause); the
    # TimeoutError family has OSError's layout and must be allocated by it.
    copy = OSError.__new__(cls) if issubclass(cls, OSError) else BaseException.__new__(cls)
    RequestError.__init__(copy, message, node=node, backend=backend, instance=instance)
    copy.__cause__ = error.__cause__
    if isinstance(error, RemoteError):
        copy.peer = error.peer  # type: ignore[attr-defined]
    return copy


def where(node: str | None, backend: str | None = None, instance: int | None = None) -> str:
    """Format a location (node, backend, instance) for error messages."""
    return _where(node, backend, instance)
