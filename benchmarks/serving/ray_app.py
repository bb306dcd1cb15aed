"""Ray Serve peer in benchmarks/serving.py: the no-op model behind Ray Serve's HTTP proxy.

A one-node Ray cluster of its own (every server on loopback, see below; no dashboard, usage stats off,
its own temporary folder), Serve's HTTP proxy on 127.0.0.1, and one deployment set up as Ray's docs advise for a fast
model: one replica with a small CPU share (``num_cpus`` 0.1, so the proxy and controller are never
starved of a scheduling slot), ``max_ongoing_requests`` raised to 256 (the default, 5, would queue
64 connections in the proxy), access log off. It takes the same Triton JSON body as the others at
``/v2/models/identity/infer`` and answers OUTPUT0 with the input's data.

    python benchmarks/serving/ray_app.py --port 8000 --temp-dir /tmp/ray-bench

It runs until SIGTERM or SIGINT, then shuts Serve and Ray down.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

MODEL = "identity"


def _replica_on_loopback() -> None:
    """Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (every interface).

    Called in the replica before that server starts, this has it bind 127.0.0.1 instead: the address
    is all that changes (the node's address, which Ray's clients dial, is loopback here anyway).
    """
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if add_port is None:
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        return add_port(server, address)

    replica.add_port_to_grpc_server = on_loopback


def build() -> Any:
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(
        num_replicas=1,
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": 0.1},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    class Identity:
        def __init__(self) -> None:
            _replica_on_loopback()

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            data = body["inputs"][0]["data"]
            return {
                "model_name": MODEL,
                "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, len(data)], "data": data}],
            }

    return Identity.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--temp-dir", required=True, help="Ray's session folder (short: Unix socket paths live there)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray turns a node address of 127.0.0.1 into the machine's routable one (and its servers then listen
    # on every interface) unless this says "no cluster beyond this machine"; then they bind loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=args.temp_dir,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": args.port},
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        serve.run(build(), name=MODEL, route_prefix=f"/v2/models/{MODEL}/infer")
        print("ray serve ready", flush=True)
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
