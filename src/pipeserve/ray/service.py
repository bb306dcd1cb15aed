"""``pipeserve serve CONFIG... --ray``: deploy the models as a Ray Serve application, on a cluster
(``--address``) or on a local one started here, and keep it until SIGINT or SIGTERM; then the
application is deleted (and a local cluster shut down)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from .. import PipeServeError

__all__ = ["serve_on_ray"]

log = logging.getLogger("pipeserve.ray")


def serve_on_ray(args: argparse.Namespace) -> int:
    """Run the ``serve --ray`` command; returns the exit status."""
    from . import _ray, app

    ray, serve = _ray()
    if args.grpc_port not in (8001, -1):
        print("pipeserve: gRPC is not served on Ray (its clients use pipeserve serve)", file=sys.stderr)
    local = args.address is None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if local:
        if args.host in ("127.0.0.1", "localhost"):
            # Every server of the local cluster on loopback, as pipeserve serve binds by default.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            init["_node_ip_address"] = "127.0.0.1"
        if args.cpu_count:
            init["num_cpus"] = args.cpu_count
        ray.init(**init)
    else:
        ray.init(address=args.address, **init)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    name = args.app_name
    try:
        serve.start(
            http_options={"host": args.host, "port": args.port},
            logging_config={"enable_access_log": bool(args.access_log), "log_level": "WARNING"},
        )
        application = app(
            args.configs,
            replicas=args.replicas,
            autoscale=args.autoscale,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            timeout=args.timeout / 1e3 if args.timeout else None,
            metrics=args.metrics,
            max_body=args.max_body,
            drain_timeout=args.drain_timeout,
        )
        serve.run(application, name=name, route_prefix=args.route_prefix)
        prefix = args.route_prefix.rstrip("/")
        print(f"pipeserve: serving on Ray at http://{args.host}:{args.port}{prefix} (application {name!r})", flush=True)
        stop.wait()
        print("pipeserve: stopping", flush=True)
    except PipeServeError as exc:
        print(f"pipeserve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            serve.delete(name)
        except Exception as exc:  # noqa: BLE001 - report, and still shut down what we started
            log.warning("pipeserve: could not delete application %r: %r", name, exc)
        if local:
            serve.shutdown()
        ray.shutdown()
    return 0
