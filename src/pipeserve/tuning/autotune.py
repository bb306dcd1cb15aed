"""``autotune = { p99_ms = ... }``: a pipe that tunes itself while it serves (NOTE [autotune]).

The configuration: a pipe-wide table ``autotune`` with ``p99_ms`` (the target, required),
``interval_s`` (how often the controller looks, default 1), ``instances`` (how many instances
the computing nodes may run at once together; default the larger of what the configuration
declares and the CPU budget's cores), ``frozen`` (start frozen), ``margin`` (the measured loss
that undoes a change, default 0.03) and ``min_requests`` (an interval with fewer completed
requests is not judged, default 20: raise ``interval_s`` for a slow pipeline); and per node an
optional ``tune`` table of bounds: ``instances = [low, high]`` (the node builds ``high`` instances and starts with
``instance_num`` of them active), ``max = [low, high]`` (the backend is built for ``high``, the
node starts at its configured ``max``), ``window_ms = [low, high]``, and ``frozen = true`` to
leave the node as configured. Default bounds: what the configuration gives as the high ones
(instances 1 to ``instance_num``, ``max`` from the node's ``min`` to its ``max``) and windows from
0 to the configured window or 10 ms, whichever is more.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..config import NodeConfig, Params, get_bool, get_float, get_int
from ..errors import ConfigError
from .controller import Controller, Decision
from .sample import LatencyRecorder, Sample
from .space import Bounds, Knobs, Setting, Space

if TYPE_CHECKING:
    from ..pipe import Pipe
    from ..statistics import NodeStatistics

__all__ = ["AutoTuner", "AutotuneSettings", "apply", "attach", "node_bounds", "tune_table", "widened"]

log = logging.getLogger("pipeserve.autotune")
DEFAULT_WINDOW_BOUND_MS = 10.0
KEPT_DECISIONS = 200


@dataclass(frozen=True)
class AutotuneSettings:
    """The ``autotune`` table, checked."""

    p99_ms: float
    interval_s: float = 1.0
    instances: int | None = None
    frozen: bool = False
    margin: float = 0.03
    min_requests: int = 20

    @classmethod
    def read(cls, table: Params) -> AutotuneSettings:
        """Check the table's keys and values.

        Raises:
            ConfigError: an unknown key, a missing or non-positive ``p99_ms``, a bad value.
        """
        unknown = set(table) - {"p99_ms", "interval_s", "instances", "frozen", "margin", "min_requests"}
        if unknown:
            raise ConfigError(f"unknown autotune key(s) {sorted(unknown)}", key="autotune")
        if "p99_ms" not in table:
            raise ConfigError("autotune needs p99_ms, the latency target", key="autotune")
        p99 = get_float(table, "p99_ms", node="autotune", minimum=0.0)
        interval = get_float(table, "interval_s", 1.0, node="autotune", minimum=0.0)
        if p99 <= 0 or interval <= 0:
            raise ConfigError("autotune's p99_ms and interval_s must be above 0", key="autotune")
        instances = get_int(table, "instances", 0, node="autotune", minimum=0) or None
        margin = get_float(table, "margin", 0.03, node="autotune", minimum=0.0)
        least = get_int(table, "min_requests", 20, node="autotune", minimum=1)
        return cls(p99, interval, instances, get_bool(table, "frozen", False, node="autotune"), margin, least)


def tune_table(params: Params, node: str) -> Mapping[str, Any]:
    """A node's ``tune`` table of bounds (empty when absent).

    Raises:
        ConfigError: not a table, or an unknown key.
    """
    table = params.get("tune", {})
    if not isinstance(table, Mapping):
        raise ConfigError("expected a table of bounds", node=node, key="tune")
    unknown = set(table) - {"instances", "max", "window_ms", "frozen"}
    if unknown:
        raise ConfigError(f"unknown tune key(s) {sorted(unknown)}", node=node, key="tune")
    return table


def _pair(table: Mapping[str, Any], key: str, default: tuple[float, float], node: str) -> tuple[float, float]:
    value = table.get(key)
    if value is None:
        return default
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ConfigError(f"expected [low, high] with 0 <= low <= high, got {value!r}", node=node, key=f"tune.{key}")
    return float(value[0]), float(value[1])


def node_bounds(
    table: Mapping[str, Any], node: str, *, instance_num: int, batch: tuple[int, int, int], window_ms: float
) -> Bounds:
    """A node's bounds from its ``tune`` table and its configuration: ``batch`` is its
    (min, configured max, largest the backend accepts).

    Raises:
        ConfigError: bounds that are not [low, high] pairs or leave no valid value.
    """
    low_batch, configured, limit = batch
    instances = _pair(table, "instances", (1, instance_num), node)
    sizes = _pair(table, "max", (low_batch, configured), node)
    windows = _pair(table, "window_ms", (0.0, max(window_ms, DEFAULT_WINDOW_BOUND_MS)), node)
    if instances[0] < 1:
        raise ConfigError("at least one instance", node=node, key="tune.instances")
    size_low, size_high = max(low_batch, int(sizes[0])), min(limit, int(sizes[1]))
    if size_low > size_high:
        raise ConfigError(f"no batch max between {sizes} fits the backend's range", node=node, key="tune.max")
    return Bounds(
        instances=(int(instances[0]), int(instances[1])),
        max=(size_low, size_high),
        window_ms=windows,
        frozen=bool(table.get("frozen", False)),
    )


class AutoTuner:
    """The controller (NOTE [autotune]) run on a pipe: every ``interval_s`` it samples the pipe's
    statistics and the latencies of the requests that ended, and applies what the controller
    decides through :meth:`Pipe.adjust <pipeserve.Pipe.adjust>`. One daemon thread; thread-safe.

    Reach it as ``pipe.autotune``: :meth:`freeze` / :meth:`unfreeze`, :attr:`decisions`,
    :meth:`status` (also in ``pipe.stats()``, the metrics and the status page).
    """

    def __init__(
        self,
        pipe: Pipe,
        settings: AutotuneSettings,
        space: Space,
        start: Setting,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipe = pipe
        self.settings = settings
        self.space = space
        self._clock = clock
        self._lock = threading.Lock()
        self.controller = Controller(
            space, start, settings.p99_ms, margin=settings.margin, min_requests=settings.min_requests, clock=clock
        )
        self.controller.frozen = settings.frozen
        self._recorder = LatencyRecorder(pipe.entries[0])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, Mapping[str, NodeStatistics]] | None = None
        self.last_sample: Sample | None = None
        self.samples = 0

    # ----------------------------------------------------------------- running
    def start(self) -> None:
        """Start sampling (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self.pipe.add_observer(self._recorder)
            self._last = (self._clock(), self.pipe.statistics())
            self._thread = threading.Thread(target=self._run, name="pipeserve-autotune", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.tick()
            except Exception:  # never let the tuner take the pipe down
                log.exception("autotune: a tick failed; the pipe keeps its setting")

    def tick(self) -> Setting | None:
        """One interval: sample, decide, apply. Returns the setting applied, if any."""
        with self._lock:
            now, statistics = self._clock(), self.pipe.statistics()
            latencies, failed = self._recorder.take()
            if self._last is None:
                self._last = (now, statistics)
                return None
            then, before = self._last
            self._last = (now, statistics)
            sample = Sample.between(before, statistics, self.controller.setting, latencies, now - then, failed)
            self.last_sample = sample
            self.samples += 1
            old = self.controller.setting
            new = self.controller.observe(sample)
            if new is not None:
                apply(self.pipe, new, old)
                decision = self.controller.decisions[-1]
                log.info("autotune %s: %s (%s)", decision.kind, decision.what, decision.why)
            return new

    def close(self) -> None:
        """Stop sampling (idempotent); the pipe keeps the setting it has."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self.pipe.remove_observer(self._recorder)

    # ----------------------------------------------------------------- control and view
    @property
    def frozen(self) -> bool:
        """Whether changes are stopped (the tuner still samples)."""
        return self.controller.frozen

    def freeze(self) -> None:
        """Stop changing knobs (a change on trial stays); the tuner still samples."""
        with self._lock:
            self.controller.frozen = True

    def unfreeze(self) -> None:
        """Let the tuner change knobs again."""
        with self._lock:
            self.controller.frozen = False

    @property
    def setting(self) -> Setting:
        """The knobs the tuner runs the pipe with now."""
        return self.controller.setting

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every change, keep and revert so far (the last ``KEPT_DECISIONS``), oldest first."""
        with self._lock:
            return tuple(self.controller.decisions[-KEPT_DECISIONS:])

    def status(self) -> dict[str, Any]:
        """Plain data: target, frozen, settled, the setting, the bounds, the last sample's figures
        and the decisions (wall-clock times)."""
        with self._lock:
            sample = self.last_sample
            decisions = self._wall(self.controller.decisions[-KEPT_DECISIONS:])
            return {
                "p99_ms": self.settings.p99_ms,
                "interval_s": self.settings.interval_s,
                "frozen": self.controller.frozen,
                "settled": self.controller.settled,
                "instance_budget": self.space.instance_budget,
                "instances_used": self.space.used(self.controller.setting),
                "setting": {name: asdict(k) for name, k in self.controller.setting.items()},
                "bounds": {
                    name: {
                        "instances": list(b.instances),
                        "max": list(b.max),
                        "window_ms": list(b.window_ms),
                        "frozen": b.frozen,
                    }
                    for name, b in self.space.bounds.items()
                },
                "last": None
                if sample is None
                else {
                    "throughput": sample.throughput,
                    "p50_ms": sample.p50_ms,
                    "p99_ms": sample.p99_ms,
                    "completed": sample.completed,
                },
                "changes": self.controller.totals.get("change", 0),
                "reverts": self.controller.totals.get("revert", 0),
                "decisions": decisions,
            }

    def counts(self) -> dict[tuple[str, str], int]:
        """Decisions so far by (node, kind): ``change``, ``keep`` or ``revert``."""
        with self._lock:
            return dict(self.controller.counts)

    def node_status(self, node: str) -> dict[str, Any] | None:
        """What ``pipe.stats()[node]["autotune"]`` shows: the node's knobs now and the decisions
        that changed it."""
        with self._lock:
            knobs = self.controller.setting.get(node)
            if knobs is None:
                return None
            mine = [d for d in self.controller.decisions if d.before.get(node) != d.after.get(node)]
            return {**asdict(knobs), "decisions": self._wall(mine[-20:])}

    def _wall(self, decisions: list[Decision]) -> list[dict[str, Any]]:
        """Decisions as plain data, their times on the wall clock (they are on the tuner's)."""
        offset = time.time() - self._clock()
        return [{**d.as_dict(), "at": d.at + offset} for d in decisions]


def apply(pipe: Pipe, setting: Setting, previous: Setting | None = None) -> None:
    """Put ``setting`` on ``pipe`` with ``Pipe.adjust`` (only the nodes whose knobs differ from
    ``previous``, when given)."""
    for name, knobs in setting.items():
        if previous is None or previous.get(name) != knobs:
            pipe.adjust(name, max=knobs.max, batching_timeout_ms=knobs.window_ms, instances=knobs.instances)


def widened(config: NodeConfig) -> NodeConfig:
    """The node as built under autotune: each bucket group with the high bounds of its ``tune``
    table's ``instances`` and ``max`` when above ``instance_num`` and ``max`` (the backend then
    accepts batches up to that bound; the tuner starts from the configured values, the extra
    instances parked)."""
    table = tune_table(config.params, config.name)
    if len(config.groups) > 1:
        return config  # bucket groups are not tuned
    raised: dict[str, int] = {}
    for key in ("instances", "max"):
        if key in table:
            raised[key] = int(_pair(table, key, (1, 1), config.name)[1])
    if not raised:
        return config
    groups = []
    for group in config.groups:
        changed = dict(group)
        for key, config_key in (("instances", "instance_num"), ("max", "max")):
            count = get_int(group, config_key, 1, node=config.name, minimum=1)
            if raised.get(key, 0) > count:
                changed[config_key] = raised[key]
        groups.append(MappingProxyType(changed))
    return NodeConfig(config.name, config.params, tuple(groups))


def attach(pipe: Pipe, table: Params, *, clock: Callable[[], float] = time.monotonic) -> AutoTuner:
    """Bounds and the start setting from the pipe's configuration and description; the pipe put
    at its start setting (``instance_num`` active, values clamped into the bounds); the tuner
    built, not started.

    Raises:
        ConfigError: a bad ``autotune`` or ``tune`` table, or an instance budget below what the
            configuration starts with.
    """
    settings = AutotuneSettings.read(table)
    description = pipe.describe()
    bounds: dict[str, Bounds] = {}
    start: dict[str, Knobs] = {}
    declared = 0
    computing = set()
    for name, node in description.nodes.items():
        config = pipe.config.nodes[name]
        if len(config.groups) > 1:
            continue  # bucket groups keep their configuration
        instance_num = get_int(config.params, "instance_num", 1, node=name, minimum=1)
        own = tune_table(config.params, name)
        configured_max = get_int(config.params, "max", 1, node=name, minimum=1)
        bounds[name] = node_bounds(
            own,
            name,
            instance_num=instance_num,
            batch=(node.batch_range[0], configured_max, node.batch_limit),
            window_ms=node.batching_timeout_ms,
        )
        if bounds[name].instances[1] > node.instances:
            raise ConfigError("more instances than the node builds", node=name, key="tune.instances")
        start[name] = bounds[name].clamp(Knobs(instance_num, configured_max, node.batching_timeout_ms))
        if node.computes:
            computing.add(name)
            declared += instance_num
    budget = settings.instances or max(declared, pipe.budget.cores)
    space = Space(MappingProxyType(bounds), budget, frozenset(computing))
    if space.used(start) > budget:
        raise ConfigError(
            f"the nodes start with {space.used(start)} instances, over autotune's instances = {budget}",
            key="autotune",
        )
    apply(pipe, start)
    return AutoTuner(pipe, settings, space, MappingProxyType(start), clock=clock)
