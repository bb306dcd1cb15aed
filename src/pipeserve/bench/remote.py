"""A remote model as a callable, so that the load generators drive a server as they drive a pipe.

``http://host:port`` speaks the Open Inference Protocol over HTTP with one keep-alive connection
per calling thread (binary tensors, as Triton's own clients send them); ``grpc://host:port`` uses
tritonclient's gRPC client, whose channel is shared by all threads. Each item's ``data`` becomes
the model's first input: bytes for a BYTES input, otherwise an array of the input's per-item
shape (zeros when ``data`` is not numeric).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import InputError, oip

__all__ = ["Remote", "remote_call"]

Item = dict[str, Any]


class Remote(Protocol):
    """A served model as a callable: ``remote(item)`` sends one item and returns the response
    (it raises on any error status); ``close()`` releases the connections."""

    def __call__(self, item: Item) -> Any: ...

    def close(self) -> None: ...


def remote_call(url: str, model: str) -> Remote:
    """A thread-safe caller of ``model`` at ``url`` (see :class:`Remote`).

    Raises:
        InputError: a URL that is neither ``http://`` nor ``grpc://``, or an unknown model.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.hostname or not parts.port:
        raise InputError(f"expected http://host:port or grpc://host:port, got {url!r}")
    if parts.scheme == "grpc":
        return _GrpcCall(f"{parts.hostname}:{parts.port}", model)
    return _HttpCall(parts.hostname, parts.port, model)


def _first_input(metadata: dict[str, Any]) -> tuple[str, str, list[int]]:
    first = metadata["inputs"][0]
    return first["name"], first["datatype"], [max(int(d), 1) for d in first["shape"][1:]]


def _tensor(data: Any, name: str, datatype: str, shape: list[int]) -> oip.Tensor:
    import numpy as np

    if datatype == "BYTES":
        value = data if isinstance(data, bytes) else str(data).encode("utf-8")
        return oip.Tensor(name, datatype, np.array([value], dtype=object).reshape([1] * (len(shape) + 1)))
    try:
        array = np.asarray(data, dtype=oip.numpy_dtype(datatype)).reshape([1, *shape])
    except (TypeError, ValueError):
        array = np.zeros([1, *shape], oip.numpy_dtype(datatype))
    return oip.Tensor(name, datatype, array)


class _HttpCall:
    """HTTP: one persistent connection per thread, binary request and response."""

    def __init__(self, host: str, port: int, model: str) -> None:
        self.host, self.port, self.model = host, port, model
        self.path = f"/v2/models/{model}/infer"
        self.local = threading.local()
        self.connections: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()
        status, body = self._request("GET", f"/v2/models/{model}", b"", {})
        if status != 200:
            raise InputError(f"model {model!r} at {host}:{port}: {body.decode('utf-8', 'replace')}")
        self.name, self.datatype, self.shape = _first_input(json.loads(body))

    def __call__(self, item: Item) -> Any:
        request = oip.InferRequest((_tensor(item.get("data"), self.name, self.datatype, self.shape),))
        payload, header_length = oip.http_codec.encode_request(request)
        headers = {"Content-Type": "application/octet-stream"}
        if header_length is not None:
            headers[oip.HEADER_LENGTH] = str(header_length)
        status, body = self._request("POST", self.path, payload, headers)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        return body

    def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection: http.client.HTTPConnection | None = getattr(self.local, "connection", None)
        for attempt in (0, 1):
            if connection is None:
                connection = self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
                with self.lock:
                    self.connections.append(connection)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                connection = self.local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self.lock:
            for connection in self.connections:
                connection.close()
            self.connections.clear()


class _GrpcCall:
    """gRPC: tritonclient's client, one channel for all threads."""

    def __init__(self, address: str, model: str) -> None:
        import tritonclient.grpc as grpc_client

        self.module = grpc_client
        self.model = model
        self.client = grpc_client.InferenceServerClient(address)
        metadata = self.client.get_model_metadata(model, as_json=True)
        inputs = [{**i, "shape": [int(d) for d in i["shape"]]} for i in metadata["inputs"]]
        self.name, self.datatype, self.shape = _first_input({"inputs": inputs})

    def __call__(self, item: Item) -> Any:
        tensor = _tensor(item.get("data"), self.name, self.datatype, self.shape)
        request = self.module.InferInput(self.name, list(tensor.shape), self.datatype)
        request.set_data_from_numpy(tensor.data)
        return self.client.infer(self.model, [request])

    def close(self) -> None:
        self.client.close()
