"""Configuration: a TOML file or dicts, turned into validated, frozen node configs.

Three shapes are accepted (SPEC 2):

* a path to a TOML file: top-level keys are global defaults, each table is a node;
* a flat dict ``{key: value}``: one node, named ``"main"``;
* a node dict ``{node: {key: value}, "global": {...}}``: scalar top-level keys are global
  defaults too, exactly as in TOML.

A node's own keys override the global ones. Values stay as given (strings, numbers, booleans,
lists); the typed accessors (:func:`get_int` and friends) coerce them and raise
:class:`~pipeserve.errors.ConfigError` naming the node and key, so ``max = "4"`` works as in
TorchPipe. ``&`` inside a value defines bucket groups (:func:`expand_groups`); ``X::key`` scopes a
key to backend ``X`` (:func:`params_for`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_NODE",
    "RESERVED_KEYS",
    "NodeConfig",
    "PipeConfig",
    "expand_groups",
    "get_bool",
    "get_float",
    "get_int",
    "get_list",
    "get_str",
    "load_config",
    "params_for",
]

DEFAULT_NODE = "main"
RESERVED_KEYS = frozenset({"data", "result", "node_name", "context", "event", "global"})
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)?$")
Params = Mapping[str, Any]


@dataclass(frozen=True)
class NodeConfig:
    """One node's configuration, global defaults already merged in.

    Attributes:
        name: the node name.
        params: every key of the node (global defaults overridden by its own keys).
        groups: the bucket groups: ``params`` split on ``&`` (one entry if there is no ``&``).
    """

    name: str
    params: Params
    groups: tuple[Params, ...]


@dataclass(frozen=True)
class PipeConfig:
    """A whole pipe's configuration.

    Attributes:
        globals: the global defaults (also merged into every node).
        nodes: the nodes by name, in the order they were declared.
        autotune: the pipe-wide ``autotune`` table (:mod:`pipeserve.tuning.autotune`), or None.
    """

    globals: Params
    nodes: Mapping[str, NodeConfig]
    autotune: Params | None = None


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> PipeConfig:
    """Load a configuration from a TOML path or a dict.

    Raises:
        ConfigError: unreadable TOML, a bad node name, a non-table global, no nodes.
    """
    if isinstance(source, (str, os.PathLike)):
        raw = _read_toml(os.fspath(source))
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise ConfigError(f"expected a TOML path or a dict, got {type(source).__name__}")
    return _from_raw(raw)


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            loaded: dict[str, Any] = tomllib.load(handle)
            return loaded
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path!r}: {exc}") from exc


def _from_raw(raw: dict[str, Any]) -> PipeConfig:
    autotune = raw.pop("autotune", None)
    if autotune is not None and not isinstance(autotune, Mapping):
        raise ConfigError("expected a table such as { p99_ms = 100 }", key="autotune")
    explicit_globals = raw.pop("global", {})
    if not isinstance(explicit_globals, Mapping):
        raise ConfigError("expected a table of defaults", key="global")
    tables = {k: v for k, v in raw.items() if isinstance(v, Mapping)}
    scalars = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    globals_ = {**scalars, **explicit_globals}
    if not tables:
        # A flat dict (or a TOML file without tables) is one node.
        tables = {DEFAULT_NODE: globals_}
        globals_ = {}
    nodes: dict[str, NodeConfig] = {}
    for name, own in tables.items():
        _check_node_name(name)
        params = MappingProxyType({**globals_, **dict(own)})
        groups = tuple(MappingProxyType(g) for g in expand_groups(params, node=name))
        nodes[name] = NodeConfig(name, params, groups)
    frozen = MappingProxyType(dict(autotune)) if autotune is not None else None
    return PipeConfig(MappingProxyType(globals_), MappingProxyType(nodes), frozen)


def _check_node_name(name: str) -> None:
    if name in RESERVED_KEYS or name.startswith("_"):
        raise ConfigError(f"{name!r} is a reserved key and cannot name a node", node=name)
    if not _NODE_NAME.match(name):
        raise ConfigError(
            "a node name is letters, digits, '_' and '-', optionally with one '.alias'",
            node=name,
        )


def expand_groups(params: Params, *, node: str | None = None) -> list[dict[str, Any]]:
    """Split every string value containing ``&`` into bucket groups.

    Shorter lists repeat their last element, so ``{"max": "1&4&8", "instance_num": 2}`` gives
    three groups, each with ``instance_num = 2``.

    Raises:
        ConfigError: an empty part such as ``"1&&8"``.
    """
    split: dict[str, list[Any]] = {}
    count = 1
    for key, value in params.items():
        if isinstance(value, str) and "&" in value:
            parts = [p.strip() for p in value.split("&")]
            if any(not p for p in parts):
                raise ConfigError(f"empty bucket-group entry in {value!r}", node=node, key=key)
            split[key] = parts
            count = max(count, len(parts))
    groups = []
    for index in range(count):
        group = dict(params)
        for key, parts in split.items():
            group[key] = parts[min(index, len(parts) - 1)]
        groups.append(group)
    return groups


def params_for(backend: str, params: Params) -> dict[str, Any]:
    """The parameters backend ``backend`` sees: unscoped keys plus its own ``backend::key``."""
    out = {k: v for k, v in params.items() if "::" not in k}
    prefix = backend + "::"
    for key, value in params.items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
    return out


_MISSING: Any = object()


def _get(params: Params, key: str, default: Any, node: str | None) -> Any:
    if key in params:
        return params[key]
    if default is _MISSING:
        raise ConfigError("this key is required", node=node, key=key)
    return default


def get_int(
    params: Params,
    key: str,
    default: int = _MISSING,
    *,
    node: str | None = None,
    minimum: int | None = None,
) -> int:
    """Read an integer (``4`` or ``"4"``), at least ``minimum`` if given."""
    value = _get(params, key, default, node)
    if isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {value!r}", node=node, key=key)
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        raise ConfigError(f"expected an integer, got {value!r}", node=node, key=key) from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"expected an integer >= {minimum}, got {number}", node=node, key=key)
    return number


def get_float(
    params: Params,
    key: str,
    default: float = _MISSING,
    *,
    node: str | None = None,
    minimum: float | None = None,
) -> float:
    """Read a number (``2.5``, ``2`` or ``"2.5"``), at least ``minimum`` if given."""
    value = _get(params, key, default, node)
    if isinstance(value, bool):
        raise ConfigError(f"expected a number, got {value!r}", node=node, key=key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a number, got {value!r}", node=node, key=key) from None
    if number != number or (minimum is not None and number < minimum):
        raise ConfigError(f"expected a number >= {minimum}, got {value!r}", node=node, key=key)
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def get_bool(params: Params, key: str, default: bool = _MISSING, *, node: str | None = None) -> bool:
    """Read a boolean (``true``, ``1``, ``"yes"``, ``"off"``...)."""
    value = _get(params, key, default, node)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"expected a boolean, got {value!r}", node=node, key=key)


def get_str(params: Params, key: str, default: str = _MISSING, *, node: str | None = None) -> str:
    """Read a string; numbers are converted to their text."""
    value = _get(params, key, default, node)
    if isinstance(value, (list, tuple, dict)):
        raise ConfigError(f"expected a string, got {value!r}", node=node, key=key)
    return str(value)


def get_list(params: Params, key: str, default: list[str] | None = None, *, node: str | None = None) -> list[str]:
    """Read a list: a TOML array or a comma-separated string; empty entries are dropped."""
    value = _get(params, key, [] if default is None else default, node)
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]
