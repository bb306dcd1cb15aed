"""pipeserve on Ray: the same configuration that runs in a process, as Ray Serve replicas behind
one endpoint (online), or over a Ray Data dataset (offline). Needs ``pipeserve[ray]``; Ray is
imported only when one of these is used.

::

    import pipeserve.ray
    handle = pipeserve.ray.run("ocr", replicas=2)       # on the cluster ray.init() joined
    item = {"data": open("page.jpg", "rb").read()}
    handle(item)                                         # item["result"]: the page's lines
    # HTTP: the Open Inference Protocol at Ray's proxy (http://127.0.0.1:8000/v2/models/ocr/infer)

    pipeserve serve ocr --ray --replicas 2               # the same from the command line

Each replica holds one pipe per model, with its CPU share (``num_cpus``) as the pipe's CPU
budget, so replicas never oversubscribe a node; requests reach the pipe through its async
path, so batches form inside each replica as they do in ``pipeserve serve``. A node with a
``deployment`` key runs on a deployment of its own (NOTE [ray plan] in
:mod:`pipeserve.ray.plan`). See docs/scaling.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from .. import ConfigError, MissingDependencyError
from .data import PipeMapper, map_batches
from .handle import PipeHandle
from .plan import AppPlan, DeploymentPlan, plan_app

__all__ = ["AppPlan", "DeploymentPlan", "PipeHandle", "PipeMapper", "app", "load_models", "map_batches", "plan", "run"]


def _ray() -> Any:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise MissingDependencyError("pipeserve.ray needs Ray Serve: pip install 'pipeserve[ray]'") from exc
    return ray, serve


def load_models(sources: Sequence[str] = (), configs: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The models to serve, as configuration dicts by name: ``sources`` as ``pipeserve serve``
    takes them (TOML files, folders of them, ``ocr``), read here so that replicas on other
    machines need no copy of the files (only of the models they name), and ``configs`` (dicts,
    or TOML paths, by name). Warm-up files are made absolute.

    Raises:
        ConfigError: a missing or unreadable source, two models of one name.
    """
    from ..server import model_sources

    found: dict[str, dict[str, Any]] = {}
    given = {name: (config, None) for name, config in (configs or {}).items()}
    for name, (config, folder) in [*model_sources(list(sources)).items(), *given.items()]:
        if name in found:
            raise ConfigError(f"two models are named {name!r}")
        if isinstance(config, Mapping):
            found[name] = _absolute_warmup(dict(config), folder)
            continue
        path = Path(os.fspath(config))
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from exc
        found[name] = _absolute_warmup(raw, folder or path.parent)
    if not found:
        raise ConfigError("no model to serve: give a configuration")
    return found


def _absolute_warmup(config: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return config

    def absolute(value: Any) -> Any:
        if isinstance(value, str):
            return str(folder / value)
        if isinstance(value, list):
            return [str(folder / v) if isinstance(v, str) else v for v in value]
        return value

    tables = [config, *(v for v in config.values() if isinstance(v, dict))]
    for table in tables:
        if "warmup" in table:
            table["warmup"] = absolute(table["warmup"])
    return config


def plan(
    sources: Sequence[str] = (),
    *,
    configs: Mapping[str, Any] | None = None,
    name: str = "pipeserve",
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0.0,
    max_ongoing_requests: int | None = None,
    cpus: float | None = None,
    fit_instances: bool = True,
) -> AppPlan:
    """The deployments :func:`app` would create (see :func:`pipeserve.ray.plan.plan_app`);
    ``cpus`` None: the CPUs the connected cluster has free now, if Ray is initialised."""
    if cpus is None:
        try:
            import ray

            if ray.is_initialized():
                cpus = float(ray.available_resources().get("CPU", 0.0)) or None
        except ImportError:
            pass
    return plan_app(
        load_models(sources, configs),
        name=name,
        replicas=replicas,
        autoscale=autoscale,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_ongoing_requests=max_ongoing_requests,
        cpus=cpus,
        fit_instances=fit_instances,
    )


def app(
    sources: Sequence[str] = (),
    *,
    configs: Mapping[str, Any] | None = None,
    name: str = "pipeserve",
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0.0,
    max_ongoing_requests: int | None = None,
    cpus: float | None = None,
    fit_instances: bool = True,
    timeout: float | None = None,
    metrics: bool | None = None,
    metrics_interval: float = 1.0,
    max_body: int = 64 * 1024 * 1024,
    drain_timeout: float = 30.0,
) -> Any:
    """The Ray Serve application serving ``sources`` and ``configs`` (give it to ``serve.run``).

    Args:
        name: the ingress deployment's name.
        replicas, autoscale: ingress replicas: a count, or an autoscaling range (min, max).
        num_cpus, num_gpus: per ingress replica (num_cpus None: its share of ``cpus``,
            NOTE [ray plan]); the replica's pipes get ``num_cpus`` whole cores as their budget.
        max_ongoing_requests: per ingress replica (None: twice its largest batch capacity).
        cpus: logical CPUs the application may take (None: those free on the cluster now).
        fit_instances: in replicas without GPUs, run at most as many instances of a computing
            node as the replica has cores (NOTE [ray plan]).
        timeout: the default request deadline in seconds.
        metrics: serve the merged ``/metrics`` (None: when prometheus-client is installed).
        metrics_interval: seconds between each replica's reports (NOTE [replica metrics]).

    Raises:
        ConfigError: see :func:`plan`. MissingDependencyError: Ray Serve is not installed.
    """
    _ray()
    import importlib.util

    from .deployments import build

    if metrics is None:
        metrics = importlib.util.find_spec("prometheus_client") is not None
    planned = plan(
        sources,
        configs=configs,
        name=name,
        replicas=replicas,
        autoscale=autoscale,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_ongoing_requests=max_ongoing_requests,
        cpus=cpus,
        fit_instances=fit_instances,
    )
    options = {
        "timeout": timeout,
        "metrics": metrics,
        "metrics_interval": metrics_interval,
        "max_body": max_body,
        "drain_timeout": drain_timeout,
    }
    return build(planned, options)


def run(
    sources: Sequence[str] = (),
    *,
    route_prefix: str | None = "/",
    app_name: str = "pipeserve",
    model: str | None = None,
    **options: Any,
) -> PipeHandle:
    """Deploy :func:`app` on the cluster Ray is connected to (a local one if none) as Serve
    application ``app_name`` and return a handle to it once every replica is ready.

    ``route_prefix`` None: no HTTP route (handles only). ``options``: those of :func:`app`.
    """
    ray, serve = _ray()
    if not ray.is_initialized():
        ray.init()
    handle = serve.run(app(sources, **options), name=app_name, route_prefix=route_prefix)
    return PipeHandle(handle, model)
