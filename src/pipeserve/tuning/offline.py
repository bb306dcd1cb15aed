"""What the offline search needs from a configuration: the space, the configuration's own
setting, the configuration to build for trials, and the tuned TOML written back.

Bounds, per node, from its ``tune`` table (see :mod:`pipeserve.tuning.autotune`) or by default:
instances 1 to the larger of ``instance_num`` and the cores (for a node that computes; else
``instance_num``), ``max`` from 1 to its configured ``max`` (a larger batch only where the table
allows it: not every model takes batches of mixed inputs), windows 0 to the configured window or
10 ms. Nodes with bucket groups, graph-only nodes and nodes whose table says ``frozen`` keep their
configuration. The instance budget: ``autotune.instances`` when the configuration has it, else
the larger of the instances it declares and the cores. The trials' pipe is built with each tuned
node's high bounds of instances and ``max``, so that ``Pipe.adjust`` can set any point.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..config import PipeConfig, get_int, load_config
from .autotune import AutotuneSettings, node_bounds, tune_table
from .space import Knobs, Setting, Space

__all__ = ["CONFIG_KEYS", "OfflinePlan", "plan_offline", "toml_text", "toml_value"]


@dataclass(frozen=True)
class OfflinePlan:
    """The configuration, the space searched, its own setting (the first trial) and the
    ``{node: {...}}`` configuration the trials' pipe is built from."""

    config: PipeConfig
    space: Space
    start: Setting
    build: Mapping[str, Any]


def plan_offline(source: str | os.PathLike[str] | Mapping[str, Any], cores: int) -> OfflinePlan:
    """The plan for a configuration on ``cores`` cores (see the module docstring).

    Raises:
        ConfigError: the configuration, or a ``tune`` or ``autotune`` table, is invalid.
    """
    config = load_config(source)
    bounds, start = {}, {}
    build: dict[str, Any] = {"global": dict(config.globals)}
    declared = 0
    computing = set()
    for name, node in config.nodes.items():
        own = {k: v for k, v in node.params.items() if k not in config.globals or config.globals[k] != v}
        build[name] = own
        backend = str(node.params.get("backend", "Identity"))
        table = dict(tune_table(node.params, name))
        if backend in ("Jump", "MapReduce") or len(node.groups) > 1 or table.get("frozen"):
            continue
        instance_num = get_int(node.params, "instance_num", 1, node=name, minimum=1)
        configured = get_int(node.params, "max", 1, node=name, minimum=1)
        window = float(node.params.get("batching_timeout", 0.0))
        remote = backend.startswith("Remote")
        table.setdefault("instances", [1, instance_num if remote else max(instance_num, cores)])
        limits = node_bounds(table, name, instance_num=instance_num, batch=(1, configured, 1 << 30), window_ms=window)
        bounds[name] = limits
        start[name] = limits.clamp(Knobs(instance_num, configured, window))
        build[name] = {**own, "instance_num": limits.instances[1], "max": max(limits.max[1], configured)}
        if not remote:
            computing.add(name)
            declared += instance_num
    settings = AutotuneSettings.read({"p99_ms": 1, **(config.autotune or {})})
    budget = settings.instances or max(declared, cores)
    space = Space(MappingProxyType(bounds), budget, frozenset(computing))
    return OfflinePlan(config, space, MappingProxyType(start), MappingProxyType(build))


CONFIG_KEYS = {"instance_num": "instances", "max": "max", "batching_timeout": "window_ms"}
"""Each configuration key the tuner sets, and the :class:`Knobs` field it holds."""


def toml_text(
    config: PipeConfig,
    setting: Setting,
    start: Setting,
    why: Callable[[str, str], str],
    header: Sequence[str] = (),
) -> str:
    """``config`` as TOML with ``setting`` in place of ``start``: each changed key
    (``instance_num``, ``max``, ``batching_timeout``) followed by ``# tuned: why(node, key)``."""
    lines = [f"# {line}" for line in header]
    if header:
        lines.append("")
    for key, value in config.globals.items():
        lines.append(f"{_key(key)} = {toml_value(value)}")
    if config.autotune is not None:
        lines.append(f"autotune = {toml_value(dict(config.autotune))}")
    if config.globals or config.autotune is not None:
        lines.append("")
    for name, node in config.nodes.items():
        lines.append(f"[{_key(name)}]")
        values = {k: v for k, v in node.params.items() if k not in config.globals or config.globals[k] != v}
        changed = set()
        new, old = setting.get(name), start.get(name)
        if new is not None and old is not None:
            for key, knob in CONFIG_KEYS.items():
                if getattr(new, knob) != getattr(old, knob):
                    values[key] = getattr(new, knob)
                    changed.add(key)
        for key, value in values.items():
            comment = f"  # tuned: {why(name, key)}" if key in changed else ""
            lines.append(f"{_key(key)} = {toml_value(value)}{comment}")
        lines.append("")
    return "\n".join(lines)


def _key(name: str) -> str:
    return name if name and all(c.isalnum() or c in "_-" for c in name) else json.dumps(name)


def toml_value(value: Any) -> str:
    """A value as TOML (strings, numbers, booleans, lists and tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
