"""How pipelines become Ray Serve deployments: pure planning, no Ray here (so it is tested
without a cluster).

NOTE [ray plan]
An application serves one or more models (pipeline configurations). The *ingress* deployment
holds every model whole, except the nodes that name a ``deployment``: each such node runs in the
part of that name, a deployment of its own with its own replicas and resources. In the ingress
the node is replaced by a *hop* (backend ``RayHop``): a node that keeps the original's place in
the graph (``next``, ``map``, ``filter``, scheduling keys) and sends each batch, as one call, to a
replica of the part, whose pipe runs the original node (its own instances, batching the calls of
every ingress replica together) and returns what the node changed in each item. A part may hold
several nodes of one model; each call runs one of them.

Sizes follow from the configuration:

* ``max_ongoing_requests`` of an ingress replica is twice the largest batch capacity of its
  nodes (``max`` x ``instance_num``, at least 16): Ray never holds back requests that would have
  joined a batch forming in the replica. A part's is the number of hop calls that can be in
  flight towards it (every hop instance of every ingress replica, at least 8).
* a hop node has ``2 x instance_num x replicas`` instances by default (``hop_instances``): one
  batch running on each instance of the part and one on its way.
* the CPUs of the application are shared in proportion to the computing instances each replica
  runs, unless a deployment sets ``num_cpus``; each replica's pipe gets its share, rounded to
  whole cores (at least one), as its CPU budget.
* in a replica without GPUs, a computing node runs at most as many instances as the replica has
  cores: the configuration was written for a machine, the replica gets a share of it, and
  instances beyond the cores only take turns (two replicas of one core each then run what one
  replica of two cores runs, and never twice as many threads).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .. import ConfigError

__all__ = ["AppPlan", "DeploymentPlan", "capacity", "plan_app"]

# Keys that place a node in the graph: they stay with the hop, never travel to the part.
GRAPH_KEYS = frozenset({"next", "map", "filter", "jump", "split", "merge"})
# Keys of the served model's signature and start: the ingress's business, not the part's.
SERVING_KEYS = frozenset({"inputs", "outputs", "max_batch_size", "warmup", "name"})
PLACEMENT_KEYS = frozenset({"deployment", "hop_instances"})
DEPLOYMENT_OPTIONS = frozenset({"name", "replicas", "autoscale", "num_cpus", "num_gpus"})
NOT_COMPUTING = frozenset({"Jump", "MapReduce", "Remote", "RayHop"})
RESERVED_DEPLOYMENT = "pipeserve-board"  # the application's metrics board (NOTE [replica metrics])


@dataclass(frozen=True)
class DeploymentPlan:
    """One deployment of the application.

    Attributes:
        name: the deployment's name.
        models: the pipe configuration each replica builds, per model (a part has one).
        nodes: the nodes it runs for hops (empty for the ingress).
        replicas: fixed replica count, or the autoscaling range's low end.
        autoscale: (min, max) replicas, or None for a fixed count.
        num_cpus: logical CPUs per replica (None: a share of the rest, :func:`plan_app`).
        num_gpus: GPUs per replica.
        weight: computing instances per replica (how CPUs are shared).
        max_ongoing_requests: calls a replica takes at once.
        fitted: the instance counts capped at the replica's cores, as ``model.node: N -> M``.
    """

    name: str
    models: Mapping[str, Mapping[str, Any]]
    nodes: tuple[str, ...]
    replicas: int
    autoscale: tuple[int, int] | None
    num_cpus: float | None
    num_gpus: float
    weight: int
    max_ongoing_requests: int
    fitted: tuple[str, ...] = ()

    @property
    def most_replicas(self) -> int:
        """The most replicas it may run."""
        return self.autoscale[1] if self.autoscale else self.replicas

    @property
    def cores(self) -> int:
        """The CPU budget of each replica's pipe: its CPUs rounded, at least one core (so a
        replica with a fraction of a CPU still runs a thread per instance)."""
        return max(1, round(self.num_cpus or 1.0))


@dataclass(frozen=True)
class AppPlan:
    """An application: the ingress and its parts.

    Attributes:
        ingress: the deployment that takes requests (HTTP and handles).
        parts: the deployments holding nodes of the graph (NOTE [ray plan]).
        link: a token naming this application's hops (so that two applications in one process
            never mix their handles).
    """

    ingress: DeploymentPlan
    parts: tuple[DeploymentPlan, ...]
    link: str

    @property
    def deployments(self) -> tuple[DeploymentPlan, ...]:
        """The ingress, then the parts."""
        return (self.ingress, *self.parts)


def plan_app(
    models: Mapping[str, Mapping[str, Any]],
    *,
    name: str = "pipeserve",
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0.0,
    max_ongoing_requests: int | None = None,
    cpus: float | None = None,
    fit_instances: bool = True,
) -> AppPlan:
    """Plan the deployments serving ``models`` (configurations as dicts, by model name).

    Args:
        name: the ingress deployment's name.
        replicas, autoscale: the ingress's replica count, or its autoscaling range (min, max).
        num_cpus, num_gpus: resources per ingress replica (num_cpus None: a share of ``cpus``).
        max_ongoing_requests: per ingress replica (None: from the batch capacity).
        cpus: the logical CPUs the application may use in all (None: 1 per replica where not
            set).
        fit_instances: cap computing nodes' instances at their replica's cores where it has
            no GPU (NOTE [ray plan]).

    Raises:
        ConfigError: a misplaced ``deployment`` key, conflicting options of one deployment, two
            deployments of one name, a range that is not min <= max.
    """
    if autoscale is not None:
        low, high = autoscale
        if not 0 <= low <= high or high < 1:
            raise ConfigError(f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low},{high}")
    elif replicas < 1:
        raise ConfigError(f"replicas must be at least 1, got {replicas}")
    ingress_models: dict[str, dict[str, Any]] = {}
    part_models: dict[str, dict[str, Any]] = {}
    part_nodes: dict[str, list[str]] = {}
    part_options: dict[str, dict[str, Any]] = {}
    part_owner: dict[str, str] = {}
    link = uuid.uuid4().hex[:12]
    hops: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for model, config in models.items():
        if isinstance(config.get("deployment"), Mapping):
            raise ConfigError(
                "'deployment' places one node: put it in the node's table ([main] for a one-node pipe), "
                "not at the top level",
                key="deployment",
            )
        nodes, globals_ = _split(config)
        if "deployment" in globals_:
            raise ConfigError("'deployment' places one node; it cannot be a top-level key", key="deployment")
        ingress_config: dict[str, Any] = {"global": dict(globals_)} if globals_ else {}
        for node, table in nodes.items():
            placement = table.get("deployment")
            if placement is None:
                ingress_config[node] = dict(table)
                continue
            options = _placement(placement, node)
            part = options["name"]
            owner = part_owner.setdefault(part, model)
            if owner != model:
                raise ConfigError(f"deployment {part!r} holds nodes of two models ({owner!r}, {model!r})", node=node)
            _check_placeable(node, table, {**globals_, **table})
            merged = part_options.setdefault(part, {})
            for key, value in options.items():
                if merged.setdefault(key, value) != value:
                    raise ConfigError(
                        f"deployment {part!r}: {key} = {value!r} here, {merged[key]!r} on another node",
                        node=node,
                        key="deployment",
                    )
            part_config = part_models.setdefault(part, {"global": dict(globals_)} if globals_ else {})
            part_config[node] = {k: v for k, v in table.items() if k not in GRAPH_KEYS | PLACEMENT_KEYS | SERVING_KEYS}
            part_nodes.setdefault(part, []).append(node)
            # The hop keeps the node's imports only when its filter may come from them (a filter
            # runs in the ingress); the backend's module need not be importable there. A hop waits
            # as long as its part takes: the node's compute_timeout is the part's business.
            dropped = {"compute_timeout"} | ({"imports"} if "filter" not in table else set())
            hop = {k: v for k, v in table.items() if k not in PLACEMENT_KEYS | dropped}
            hop.update(backend="RayHop", instance_type="thread", ray_deployment=part, ray_link=link, ray_node=node)
            hops.setdefault(part, []).append((node, table))
            ingress_config[node] = hop
        ingress_models[model] = ingress_config
    for taken in (name, RESERVED_DEPLOYMENT):
        if taken in part_models:
            raise ConfigError(f"a deployment is named {taken!r}, a name the application uses: choose another")
    parts = []
    for part, config in part_models.items():
        options = part_options[part]
        part_replicas, part_autoscale = _replicas(options, part)
        parts.append(
            DeploymentPlan(
                name=part,
                models={part_owner[part]: config},
                nodes=tuple(part_nodes[part]),
                replicas=part_replicas,
                autoscale=part_autoscale,
                num_cpus=_float(options.get("num_cpus"), part, "num_cpus"),
                num_gpus=_float(options.get("num_gpus"), part, "num_gpus") or 0.0,
                weight=sum(_computing(params) for params in _params(config).values()),
                max_ongoing_requests=0,  # below, once the hops are sized
            )
        )
    ingress = DeploymentPlan(
        name=name,
        models=ingress_models,
        nodes=(),
        replicas=autoscale[0] if autoscale else replicas,
        autoscale=autoscale,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        weight=sum(_computing(params) for config in ingress_models.values() for params in _params(config).values()),
        max_ongoing_requests=0,
    )
    plan = _share_cpus(AppPlan(ingress, tuple(parts), link), cpus)
    if fit_instances:
        plan = _fit_instances(plan)
    return _size_hops(plan, hops, max_ongoing_requests)


def _fit_instances(plan: AppPlan) -> AppPlan:
    """In deployments without GPUs, cap each computing node's ``instance_num`` at the replica's
    cores: more instances than cores cannot compute at once, they only take turns (and each holds
    its own copy of the model). The configuration was written for the machine; a replica gets a
    share of it."""
    fitted_plans = []
    for deployment in plan.deployments:
        if deployment.num_gpus:
            fitted_plans.append(deployment)
            continue
        fitted: list[str] = []
        for model, config in deployment.models.items():
            for node, params in _params(config).items():
                raw = params.get("instance_num", 1)
                if not _computing(params) or (isinstance(raw, str) and "&" in raw):
                    continue
                try:
                    count = int(raw)
                except (TypeError, ValueError):
                    continue  # building the pipe will say what is wrong
                if count > deployment.cores:
                    config[node]["instance_num"] = deployment.cores  # the plan's own copy: node tables
                    fitted.append(f"{model}.{node}: {count} -> {deployment.cores} instances")
        fitted_plans.append(replace(deployment, fitted=tuple(fitted)))
    return replace(plan, ingress=fitted_plans[0], parts=tuple(fitted_plans[1:]))


def _size_hops(
    plan: AppPlan, hops: Mapping[str, list[tuple[str, dict[str, Any]]]], max_ongoing_requests: int | None
) -> AppPlan:
    """Each hop's instances from its part's (fitted) instances and replicas, and every
    deployment's ``max_ongoing_requests`` (NOTE [ray plan])."""
    ingress = plan.ingress
    parts = []
    for part in plan.parts:
        ((model, config),) = part.models.items()
        params = _params(config)
        hop_calls = 0
        for node, table in hops[part.name]:
            instances = _count(params[node].get("instance_num", 1), node)
            count = _count(table.get("hop_instances", 2 * instances * part.most_replicas), node, key="hop_instances")
            ingress.models[model][node]["instance_num"] = count
            hop_calls += count
        parts.append(replace(part, max_ongoing_requests=max(8, hop_calls * ingress.most_replicas)))
    most = max(capacity(config) for config in ingress.models.values())
    ingress = replace(ingress, max_ongoing_requests=max_ongoing_requests or max(16, 2 * most))
    return replace(plan, ingress=ingress, parts=tuple(parts))


def capacity(config: Mapping[str, Any]) -> int:
    """The largest number of items one node of ``config`` can hold in running batches:
    ``max x instance_num`` (bucket groups summed; 1 where a key is absent)."""
    best = 1
    for params in _params(config).values():
        maxes = str(params.get("max", 1)).split("&")
        counts = str(params.get("instance_num", 1)).split("&")
        if len(counts) == 1:
            counts = counts * len(maxes)
        if len(maxes) == 1:
            maxes = maxes * len(counts)
        try:
            held = sum(int(m) * int(c) for m, c in zip(maxes, counts, strict=False))
        except ValueError:
            continue  # an invalid value: building the pipe will say so
        best = max(best, held)
    return best


# ---------------------------------------------------------------------------------------- helpers
def _params(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each node's keys, the global ones merged in (as the pipe reads them)."""
    nodes, globals_ = _split(config)
    return {node: {**globals_, **table} for node, table in nodes.items()}


def _split(config: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(nodes by name, global keys) of a configuration dict (one node ``main`` when it has no
    tables)."""
    tables = {k: dict(v) for k, v in config.items() if isinstance(v, Mapping) and k != "global"}
    globals_ = {k: v for k, v in config.items() if not isinstance(v, Mapping)}
    globals_.update(config.get("global", {}) if isinstance(config.get("global"), Mapping) else {})
    if not tables:
        return {"main": dict(globals_)}, {}
    return tables, globals_


def _placement(value: Any, node: str) -> dict[str, Any]:
    if isinstance(value, str) and value:
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"]:
        unknown = set(value) - DEPLOYMENT_OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown deployment option(s) {sorted(unknown)}; known: {sorted(DEPLOYMENT_OPTIONS)}",
                node=node,
                key="deployment",
            )
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
    raise ConfigError(
        "'deployment' is a deployment's name, or a table { name = ..., replicas = ..., autoscale = [MIN, MAX], "
        f"num_cpus = ..., num_gpus = ... }}; got {value!r}",
        node=node,
        key="deployment",
    )


def _check_placeable(node: str, table: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    if "." in node:
        raise ConfigError("a logical node runs where its physical node does: set 'deployment' there", node=node)
    backend = str(params.get("backend", "Identity")).strip()
    if backend in ("Jump", "MapReduce"):
        raise ConfigError(f"a {backend} node only routes sub-requests: it has nothing to deploy", node=node)
    grouped = [k for k, v in table.items() if isinstance(v, str) and "&" in v and k not in GRAPH_KEYS]
    if grouped:
        raise ConfigError(f"bucket groups ('&' in {grouped}) are not supported on a deployed node", node=node)


def _replicas(options: Mapping[str, Any], part: str) -> tuple[int, tuple[int, int] | None]:
    scale = options.get("autoscale")
    if scale is not None:
        if "replicas" in options:
            raise ConfigError(f"deployment {part!r}: set 'replicas' or 'autoscale', not both", key="deployment")
        if not (isinstance(scale, tuple) and len(scale) == 2 and all(isinstance(v, int) for v in scale)):
            raise ConfigError(f"deployment {part!r}: autoscale is [MIN, MAX], got {scale!r}", key="deployment")
        if not 0 <= scale[0] <= scale[1] or scale[1] < 1:
            raise ConfigError(f"deployment {part!r}: autoscale needs 0 <= MIN <= MAX, MAX >= 1", key="deployment")
        return scale[0], (scale[0], scale[1])
    return _count(options.get("replicas", 1), part, key="replicas"), None


def _count(value: Any, node: str, *, key: str = "instance_num") -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a whole number, got {value!r}", node=node, key=key) from None
    if count < 1:
        raise ConfigError(f"must be at least 1, got {count}", node=node, key=key)
    return count


def _float(value: Any, part: str, key: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"deployment {part!r}: {key} must be a number, got {value!r}", key="deployment") from None
    if number < 0 or math.isnan(number):
        raise ConfigError(f"deployment {part!r}: {key} must be >= 0, got {value!r}", key="deployment")
    return number


def _computing(table: Mapping[str, Any]) -> int:
    """The computing instances of one node's keys (0 for routing, remote and hop nodes)."""
    if str(table.get("backend", "Identity")).strip() in NOT_COMPUTING:
        return 0
    try:
        return sum(int(c) for c in str(table.get("instance_num", 1)).split("&"))
    except ValueError:
        return 1


def _share_cpus(plan: AppPlan, cpus: float | None) -> AppPlan:
    """Give every deployment without ``num_cpus`` its per-replica share of ``cpus``: what the
    fixed ones leave, in proportion to computing instances (one instance counted at least per
    replica, for its Python); without ``cpus``, one CPU per replica."""
    open_ = [d for d in plan.deployments if d.num_cpus is None]
    if not open_:
        return plan
    if cpus is None:
        shares = {d.name: 1.0 for d in open_}
    else:
        fixed = sum((d.num_cpus or 0.0) * d.most_replicas for d in plan.deployments if d.num_cpus is not None)
        left = max(0.0, cpus - fixed)
        weights = {d.name: max(1, d.weight) for d in open_}
        # A range from 0 starts one replica (Ray's initial_replicas here): count that one.
        total = sum(weights[d.name] * max(1, d.replicas) for d in open_)
        # Rounded down to 1/100 CPU so that the shares never add up to more than there is.
        shares = {d.name: max(0.01, math.floor(100 * left * weights[d.name] / total) / 100) for d in open_}
    ingress = plan.ingress
    if ingress.num_cpus is None:
        ingress = replace(ingress, num_cpus=shares[ingress.name])
    parts = tuple(replace(p, num_cpus=shares[p.name]) if p.num_cpus is None else p for p in plan.parts)
    return replace(plan, ingress=ingress, parts=parts)
