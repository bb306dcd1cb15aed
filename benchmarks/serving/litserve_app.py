"""LitServe peer in benchmarks/serving.py: the no-op model behind LitServe's HTTP server.

It takes the same Triton JSON body as the others (``{"inputs": [{"name": "INPUT0", ..., "data":
[1]}]}``) at ``/v2/models/identity/infer`` and answers OUTPUT0 with the input's data. Set up as
LitServe's docs advise for a fast model: ``fast_queue=True`` (ZeroMQ between the API server and the
worker), one worker on the CPU, one API server, logging at warning (no access log), no client file.

``--batch N`` turns LitServe's batching on: up to N requests per ``predict`` with a 1 ms
``batch_timeout``. (0 would be pipeserve's setting, but LitServe's batch collector then polls its
queue without ever blocking, which keeps a core busy when idle; 1 ms is its internal poll step.)

    python benchmarks/serving/litserve_app.py --port 8000 [--batch 8]
"""

import argparse
from typing import Any

import litserve as ls

MODEL = "identity"


class Identity(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        pass

    # LitServe reads the annotation of ``request`` (and encode_response's return) to choose what it
    # parses and how it serialises; unannotated means: the JSON body in, a plain JSON response out.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return request["inputs"][0]["data"]

    def predict(self, x: Any) -> Any:
        return x  # one request's data, or with batching a list of them (LitServe batches lists as lists)

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {
            "model_name": MODEL,
            "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, len(output)], "data": output}],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1, help="max_batch_size (1: no batching)")
    args = parser.parse_args()
    api = Identity(
        api_path=f"/v2/models/{MODEL}/infer",
        max_batch_size=args.batch,
        batch_timeout=0.001 if args.batch > 1 else 0.0,
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
