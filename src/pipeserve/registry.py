"""Names to backends and filters, and building a parsed backend tree into live instances.

Built-in names are *lazy* entries (``"module:attr"``), imported on first use, so that
``import pipeserve`` stays cheap and optional dependencies are only imported by the backends
that need them. A lazy entry whose import fails for lack of a package raises
:class:`~pipeserve.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, TypeVar, overload

from .backend import Backend, Child, DuckBackend, FunctionBackend, Options
from .config import params_for
from .errors import ConfigError, MissingDependencyError, RegistryError, UnknownNameError
from .filters import BUILTIN_FILTERS, Filter
from .syntax import BackendTree

__all__ = [
    "import_modules",
    "build",
    "check_names",
    "list_backends",
    "list_filters",
    "register_backend",
    "register_filter",
    "register_lazy_backend",
    "resolve_filter",
]

T = TypeVar("T")


@dataclass(frozen=True)
class _Lazy:
    target: str  # "package.module:attribute"
    extra: str | None = None


_lock = threading.Lock()
_backends: dict[str, Any] = {}
_filters: dict[str, Any] = dict(BUILTIN_FILTERS)

_BASIC = "pipeserve.backends.basic"
_IMAGE = "pipeserve.backends.image"
_LAZY_OPTIONAL = {
    "OnnxRuntime": ("pipeserve.backends.onnx:OnnxRuntime", "onnx"),
    "Onnx": ("pipeserve.backends.onnx:OnnxRuntime", "onnx"),
    "DecodeMat": (f"{_IMAGE}:DecodeMat", "vision"),
    "ResizeMat": (f"{_IMAGE}:ResizeMat", "vision"),
    "cvtColorMat": (f"{_IMAGE}:cvtColorMat", "vision"),
    "CvtColorMat": (f"{_IMAGE}:cvtColorMat", "vision"),
    "ResizePadMat": (f"{_IMAGE}:ResizePadMat", "vision"),
    "FixHResizePadMat": (f"{_IMAGE}:FixHResizePadMat", "vision"),
    "CropMat": (f"{_IMAGE}:CropMat", "vision"),
    "PerspectiveTransformMat": (f"{_IMAGE}:PerspectiveTransformMat", "vision"),
    "Mat2Tensor": (f"{_IMAGE}:Mat2Tensor", "vision"),
    "TorchScript": ("pipeserve.backends.torch:TorchScript", "torch"),
    "TorchModule": ("pipeserve.backends.torch:TorchModule", "torch"),
    "TorchExport": ("pipeserve.backends.torch:TorchExport", "torch"),
    "Torch": ("pipeserve.backends.torch:Torch", "torch"),
    "SyncTensor": ("pipeserve.backends.torch:Torch", "torch"),
    "Remote": ("pipeserve.backends.remote:Remote", "serve"),
    "RayHop": ("pipeserve.ray.hop:RayHop", "ray"),
}
for _name, (_target, _extra) in _LAZY_OPTIONAL.items():
    _backends[_name] = _Lazy(_target, _extra)

for _name, _attr in {
    "Identity": "Identity",
    "Sequential": "Sequential",
    "S": "Sequential",
    "Sleep": "Sleep",
    "Add": "Add",
    "Remove": "Remove",
    "Copy": "Copy",
    "Move": "Move",
    "RuntimeError": "RaiseRuntimeError",
    "ValueError": "RaiseValueError",
    "Jump": "Jump",
    "MapReduce": "MapReduce",
}.items():
    _backends[_name] = _Lazy(f"{_BASIC}:{_attr}")


@overload
def register_backend(obj: str | None = None, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]: ...
@overload
def register_backend(obj: T, name: str | None = None, *, replace: bool = False) -> T: ...


def register_backend(obj: Any = None, name: str | None = None, *, replace: bool = False) -> Any:
    """Register a backend class or a function over a list of items under ``name``.

    Usable directly (``register_backend(MyBackend, "Mine")``) or as a decorator
    (``@register_backend`` or ``@register_backend("Mine")``). The name defaults to the
    object's ``__name__``.

    Raises:
        RegistryError: the name is taken and ``replace`` is false, or the object is not a
            class or a callable.
    """
    return _register(_backends, "backend", obj, name, replace)


@overload
def register_filter(obj: str | None = None, name: str | None = None, *, replace: bool = False) -> Callable[[T], T]: ...
@overload
def register_filter(obj: T, name: str | None = None, *, replace: bool = False) -> T: ...


def register_filter(obj: Any = None, name: str | None = None, *, replace: bool = False) -> Any:
    """Register a filter ``fn(item) -> pipeserve.Status`` under ``name`` (decorator too)."""
    return _register(_filters, "filter", obj, name, replace)


def register_lazy_backend(name: str, target: str, *, extra: str | None = None, replace: bool = False) -> None:
    """Register ``"module:attr"`` as backend ``name``, imported on first use.

    Args:
        extra: the pipeserve extra that provides its dependencies, named in the error
            raised when the import fails.
    """
    if ":" not in target:
        raise RegistryError(f"lazy target must look like 'module:attr', got {target!r}")
    _store(_backends, "backend", name, _Lazy(target, extra), replace)


def _register(table: dict[str, Any], kind: str, obj: Any, name: Any, replace: bool) -> Any:
    if obj is None or isinstance(obj, str):
        chosen = obj if isinstance(obj, str) else name

        def decorate(target: T) -> T:
            _register(table, kind, target, chosen, replace)
            return target

        return decorate
    if not callable(obj):
        raise RegistryError(f"cannot register {obj!r} as a {kind}: it is not callable")
    _store(table, kind, name or obj.__name__, obj, replace)
    return obj


def _store(table: dict[str, Any], kind: str, name: str, value: Any, replace: bool) -> None:
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise RegistryError(f"invalid {kind} name {name!r}: use letters, digits, '_', '.', '-'")
    with _lock:
        if name in table and not replace:
            raise RegistryError(f"a {kind} named {name!r} is already registered; pass replace=True to replace it")
        table[name] = value


def import_modules(modules: tuple[str, ...] | list[str], node: str | None = None) -> None:
    """Import ``modules`` (a node's ``imports`` key) so that the backends and filters they
    register exist before the node's backends are checked and built.

    Raises:
        ConfigError: a module cannot be imported (naming the node and the module).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module!r}: {exc}", node=node, key="imports") from exc


def list_backends() -> list[str]:
    """The registered backend names, sorted."""
    with _lock:
        return sorted(_backends)


def list_filters() -> list[str]:
    """The registered filter names, sorted."""
    with _lock:
        return sorted(_filters)


def _resolve(table: dict[str, Any], kind: str, name: str, node: str | None) -> Any:
    with _lock:
        entry = table.get(name)
    if entry is None:
        raise UnknownNameError(
            f"unknown {kind} {name!r}; registered: {', '.join(sorted(table))}",
            node=node,
            key="backend" if kind == "backend" else "filter",
        )
    if not isinstance(entry, _Lazy):
        return entry
    module_name, attr = entry.target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or "a dependency"
        hint = f"pip install 'pipeserve[{entry.extra}]'" if entry.extra else f"pip install {missing}"
        raise MissingDependencyError(
            f"{kind} {name!r} needs the package {missing!r}, which is not installed: {hint}"
        ) from exc
    value = getattr(module, attr)
    with _lock:
        if table.get(name) is entry:
            table[name] = value
    return value


def home_modules(tree: BackendTree) -> list[str]:
    """The modules that registered the backends and filters of ``tree``, in order, pipeserve's
    own left out: what another process must import to build it (a process instance's worker).
    ``__main__`` stands for the script being run."""
    names, filters = tree.names(), _filter_names(tree)
    with _lock:
        objects = [_backends.get(n) for n in names] + [_filters.get(n) for n in filters]
    found: list[str] = []
    for obj in objects:
        if obj is None or isinstance(obj, _Lazy):
            continue
        module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
        ours = module == "pipeserve" or str(module).startswith("pipeserve.")
        if isinstance(module, str) and not ours and module not in found:
            found.append(module)
    return found


def _filter_names(tree: BackendTree) -> list[str]:
    found = [tree.filter] if tree.filter is not None else []
    for child in tree.children:
        found.extend(_filter_names(child))
    return found


def cpu_weight(tree: BackendTree, node: str | None = None) -> int:
    """The cores one batch of ``tree``'s backend keeps busy: its class's ``cpu_weight`` (1 unless
    it says otherwise; 0 for a backend that waits on the network, which takes no share of the
    cores; NOTE [elastic budget] in :mod:`pipeserve.budget`).

    Raises:
        UnknownNameError, MissingDependencyError: as when it is built.
    """
    return int(getattr(_resolve(_backends, "backend", tree.name, node), "cpu_weight", 1))


def resolve_filter(name: str, node: str | None = None) -> Filter:
    """The filter registered as ``name``.

    Raises:
        UnknownNameError: no such filter.
    """
    return _resolve(_filters, "filter", name, node)  # type: ignore[no-any-return]


def check_names(tree: BackendTree, node: str | None = None) -> None:
    """Check that every backend and filter named in ``tree`` is registered (nothing is built)."""
    with _lock:
        backends = set(_backends)
    for name in tree.names():
        if name not in backends:
            raise UnknownNameError(
                f"unknown backend {name!r}; registered: {', '.join(sorted(backends))}",
                node=node,
                key="backend",
            )
    _check_filters(tree, node)


def _check_filters(tree: BackendTree, node: str | None) -> None:
    for child in tree.children:
        if child.filter is not None:
            resolve_filter(child.filter, node)
        _check_filters(child, node)
    if tree.filter is not None:
        resolve_filter(tree.filter, node)


def _instantiate(factory: Any, name: str) -> Backend:
    if inspect.isclass(factory):
        instance = factory()
        if isinstance(instance, Backend):
            return instance
        if not callable(getattr(instance, "forward", None)):
            raise RegistryError(f"backend {name!r} ({factory.__name__}) has no forward() method")
        return DuckBackend(instance)
    return FunctionBackend(factory)


def build(tree: BackendTree, params: Mapping[str, Any], options: Options) -> Backend:
    """Create and initialise the backend described by ``tree`` (children first).

    Each stage sees the node's ``params`` filtered by :func:`~pipeserve.config.params_for`,
    overridden by its inline ``Name(k=v)`` parameters. Call this on the thread that will own
    the instance. If a stage fails to initialise, the stages already built are closed.
    """
    children: list[Child] = []
    try:
        for sub in tree.children:
            child = build(sub, params, replace(options, children=()))
            children.append(
                Child(
                    backend=child,
                    name=str(sub),
                    filter=resolve_filter(sub.filter, options.node) if sub.filter else None,
                    filter_name=sub.filter,
                )
            )
        backend = _instantiate(_resolve(_backends, "backend", tree.name, options.node), tree.name)
        own = params_for(tree.name, params)
        own.update(tree.params)
        backend.init(MappingProxyType(own), replace(options, children=tuple(children)))
    except BaseException:
        for built in reversed(children):
            _close_quietly(built.backend)
        raise
    return backend


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # noqa: BLE001 - cleanup after a failed build must not mask the cause
        pass
