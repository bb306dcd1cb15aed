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
    │   ├── ContractError                   a backend broke its contract (wrong output count...)
    │   ├── FilterError                     the ``Error`` filter (or a user filter) rejected the item
    │   ├── Overloaded                      a bounded queue was full
    │   ├── PipeClosed                      the pipe was closed before the request finished
    │   └── RequestTimeout (TimeoutError)   the request's deadline passed
    └── RegistryError (ValueError)          a name registered twice without ``replace=True``

This module imports nothing of pipeserve's own, so every other module may import it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "ContractError",
    "FilterError",
    "InputError",
    "MissingDependencyError",
    "Overloaded",
    "PipeClosed",
    "PipeServeError",
    "RegistryError",
    "RequestError",
    "RequestTimeout",
    "UnknownNameError",
]


class PipeServeError(Exception):
    """Root of every exception pipeserve raises."""


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


def relocate(error: BaseException, prefix: str, *, node: str | None = None) -> RequestError:
    """A copy of ``error`` (same RequestError type, else BackendError) whose message starts with
    ``prefix``; its location attributes and cause are kept, ``node`` filled in if missing."""
    if isinstance(error, RequestError):
        copy = type(error).__new__(type(error))
        RequestError.__init__(
            copy, f"{prefix}: {error}", node=error.node or node, backend=error.backend, instance=error.instance
        )
        copy.__cause__ = error.__cause__
        return copy
    return BackendError(error, node=node)


def where(node: str | None, backend: str | None = None, instance: int | None = None) -> str:
    """Format a location (node, backend, instance) for error messages."""
    return _where(node, backend, instance)
