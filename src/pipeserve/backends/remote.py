"""``Remote``: a node whose model is served elsewhere, over the Open Inference Protocol
(``pipeserve serve``, Triton, KServe, anything that speaks it), scheduled and batched like any
other node. Needs ``pipeserve[serve]`` (numpy; tritonclient's generated stubs for gRPC).

::

    [classify]
    backend = "Remote"
    url = "grpc://10.0.0.7:8001"        # or http://host:port
    model = "resnet"
    instance_num = 4                    # requests in flight at most
    remote_inputs = { INPUT = "data" }  # remote input <- item key (default: see below)
    remote_outputs = { PROBS = "result" }

NOTE [remote calls]
A batch of N items leaves as one infer request whose inputs have a batch dimension of N, when the
remote model batches (its ``max_batch_size``, read from its configuration, is the node's ``max``);
the response is split back per item. A remote model that does not batch gets one item per request
(the node's ``max`` is 1) and the node's instances are the requests in flight. Each instance keeps
one connection (HTTP keep-alive, or a gRPC channel) and uses the binary tensor extension.

What the inputs are: with ``remote_inputs`` a table, each remote input is read from the item key
it names; without it, a model with one input reads ``data`` and a model with several reads each
from the item key of the input's name. Outputs likewise: ``remote_outputs``, else the only output
goes to ``result`` and several go to keys of their names. Datatypes and shapes come from the
model's metadata, read at start; ``remote_inputs``/``remote_outputs`` may instead be lists of
full declarations (``{ name, datatype, shape, key }``, shapes per item) with ``max_batch_size``,
and the node then starts without asking the peer.

Deadlines and failure: the earliest deadline of the batch's requests travels as the request's
``timeout`` parameter and bounds the wait for the answer. A connection that fails or a 503/
UNAVAILABLE is retried with backoff (20 ms doubling, at most 1 s) while the deadline allows
(without a deadline: ``retries`` times); then the batch's items fail together with RemoteError,
and the failure counts against the peer's circuit breaker (a kept-alive connection found closed is
replaced at once, not counted). No answer in time (504, DEADLINE_EXCEEDED, a read timing out)
fails the batch without counting: the peer is up, only slow. After ``breaker_failures`` failures
in a row the breaker opens: for ``breaker_cooldown`` ms every batch for that peer fails at once,
without a request, rather than queueing work that cannot succeed; then one batch is let through
(the probe) and its outcome closes or reopens the breaker (recovery needs no restart). An error
the peer *answers* with (a bad input, its model failing) is not the peer being down: the batch
fails, and the node runs its items again one by one (NOTE [error isolation]), so that only the
items the peer refuses fail.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import Backend, ConfigError, Options, PartialFailure, RemoteError, RequestError, RequestTimeout, TensorSpec, oip

__all__ = ["Breaker", "Remote"]

FIRST_BACKOFF, MAX_BACKOFF = 0.02, 1.0  # seconds between retries
NO_DEADLINE_TIMEOUT = 60.0  # seconds to wait for an answer when the batch has no deadline


class _Transient(Exception):
    """The peer could not be reached or said it is unavailable: worth retrying."""


class _Stale(Exception):
    """A kept-alive connection turned out closed before the request got an answer."""


class _Answered(Exception):
    """The peer answered with an error about this request."""


class _TimedOut(Exception):
    """No answer within the deadline (the peer may be slow; it is not known to be down)."""


# ------------------------------------------------------------------------------------------ breaker
class Breaker:
    """A circuit breaker shared by every node calling one peer model (NOTE [remote calls]).

    Args:
        failures: failed batches in a row that open it; cooldown: seconds it stays open.
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        """Batches fail at once now."""
        with self._lock:
            return self._open_until > time.monotonic() or self._probing

    def admit(self) -> float | None:
        """None when a batch may go; otherwise the seconds until it may be tried again. Once
        the cool-down is over, one batch goes (the probe); the others still fail at once until
        its outcome closes the breaker or opens it again."""
        with self._lock:
            if self._consecutive < self.failures:
                return None
            now = time.monotonic()
            if now < self._open_until:
                return self._open_until - now
            if self._probing:
                return self.cooldown
            self._probing = True
            return None

    def settle(self) -> None:
        """A batch ended without telling whether the peer is up (it failed before its request):
        a probe among such batches leaves the breaker as it was, ready for the next probe."""
        with self._lock:
            self._probing = False

    def succeeded(self) -> None:
        """A batch reached the peer: close the breaker."""
        with self._lock:
            self._consecutive = 0
            self._open_until = 0.0
            self._probing = False

    def failed(self) -> None:
        """A batch could not reach the peer; open the breaker on the last failure allowed."""
        with self._lock:
            self._consecutive += 1
            self._probing = False
            if self._consecutive >= self.failures:
                self._open_until = time.monotonic() + self.cooldown


_breakers: dict[tuple[str, str], Breaker] = {}
_breakers_lock = threading.Lock()


def _breaker(url: str, model: str, failures: int, cooldown: float) -> Breaker:
    with _breakers_lock:
        found = _breakers.get((url, model))
        if found is None or (found.failures, found.cooldown) != (failures, cooldown):
            found = _breakers[(url, model)] = Breaker(failures, cooldown)
        return found


# ------------------------------------------------------------------------------------------ transports
class _Http:
    """One keep-alive HTTP connection (the instance's), reopened after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connection: http.client.HTTPConnection | None = None

    def get(self, path: str, timeout: float) -> Any:
        status, _, body = self._request("GET", path, b"", {}, timeout)
        if status != 200:
            raise _Answered(f"GET {path}: HTTP {status}: {_error_text(body)}")
        return json.loads(body)

    def infer(
        self, model: str, version: str, request: oip.InferRequest, timeout: float, traceparent: str | None
    ) -> oip.InferResponse:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        payload, header_length = oip.http_codec.encode_request(request)
        headers = {"Content-Type": "application/octet-stream" if header_length is not None else "application/json"}
        if header_length is not None:
            headers[oip.HEADER_LENGTH] = str(header_length)
        if traceparent is not None:
            headers["traceparent"] = traceparent
        status, response_headers, body = self._request("POST", path, payload, headers, timeout)
        if status == 503:
            raise _Transient(f"HTTP 503: {_error_text(body)}")
        if status == 504:
            raise _TimedOut(f"HTTP 504: {_error_text(body)}")
        if status != 200:
            raise _Answered(f"HTTP {status}: {_error_text(body)}")
        return oip.http_codec.decode_response(body, response_headers.get(oip.HEADER_LENGTH.lower()))

    def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        for fresh in (self.connection is None, True):
            try:
                return self._exchange(method, path, body, headers, timeout)
            except _Stale:
                if fresh:
                    raise _Transient("the connection closed before an answer") from None
                # The peer closed the idle keep-alive connection: a new one, at once, not a retry.
        raise AssertionError("unreachable")

    def _exchange(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self.connection
        if connection is None:
            connection = self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            # A bound on each socket operation: the answer's bytes arrive in a few reads at most.
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            else:
                connection.timeout = timeout
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            found = {key.lower(): value for key, value in response.getheaders()}
        except TimeoutError as exc:
            self.close()
            raise _TimedOut(f"no answer within {timeout:.3f} s") from exc
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise _Stale() from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, unreachable, cut short
            self.close()
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        return response.status, found, data

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class _Grpc:
    """One gRPC channel (the instance's) with the protocol's generated stub."""

    def __init__(self, address: str) -> None:
        import grpc

        from ..oip import stubs

        self.grpc = grpc
        self.service = stubs.service_pb2()
        self.channel = grpc.insecure_channel(address)
        self.infer_call = self.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=self.service.ModelInferRequest.SerializeToString,
            response_deserializer=self.service.ModelInferResponse.FromString,
        )

    def _unary(self, method: str, request: Any, response_type: Any, timeout: float) -> Any:
        call = self.channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return self._guard(lambda: call(request, timeout=timeout))

    def metadata(self, model: str, version: str, timeout: float) -> dict[str, Any]:
        service = self.service
        request = service.ModelMetadataRequest(name=model, version=version)
        message = self._unary("ModelMetadata", request, service.ModelMetadataResponse, timeout)
        tensors = {
            kind: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]
            for kind, entries in (("inputs", message.inputs), ("outputs", message.outputs))
        }
        return {"name": message.name, **tensors}

    def max_batch_size(self, model: str, version: str, timeout: float) -> int:
        service = self.service
        request = service.ModelConfigRequest(name=model, version=version)
        return int(self._unary("ModelConfig", request, service.ModelConfigResponse, timeout).config.max_batch_size)

    def infer(
        self, model: str, version: str, request: oip.InferRequest, timeout: float, traceparent: str | None
    ) -> oip.InferResponse:
        message = oip.grpc_codec.encode_request(request)
        message.model_name = model
        message.model_version = version
        metadata = None if traceparent is None else (("traceparent", traceparent),)
        call = self.infer_call
        return oip.grpc_codec.decode_response(self._guard(lambda: call(message, timeout=timeout, metadata=metadata)))

    def _guard(self, call: Any) -> Any:
        try:
            return call()
        except self.grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            text = f"{getattr(code, 'name', code)}: {exc.details() if hasattr(exc, 'details') else exc}"
            if code == self.grpc.StatusCode.UNAVAILABLE:
                raise _Transient(text) from exc
            if code == self.grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _TimedOut(text) from exc
            raise _Answered(text) from exc

    def close(self) -> None:
        self.channel.close()


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------ backend
@dataclass(frozen=True)
class _Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int


class Remote(Backend):
    """A model on another server as a node (see the module docstring and NOTE [remote calls]).

    Keys: ``url`` (``http://host:port`` or ``grpc://host:port``), ``model``, ``model_version``,
    ``remote_inputs``, ``remote_outputs``, ``max_batch_size`` (instead of the peer's),
    ``retries`` (3: attempts without a deadline), ``breaker_failures`` (5),
    ``breaker_cooldown`` (5000 ms), ``connect_timeout`` (10000 ms: for the metadata at start).
    """

    cpu_weight = 0  # its instances wait on the network: no share of the CPU budget

    def init(self, params: Mapping[str, Any], options: Options) -> None:
        super().init(params, options)
        node = options.node
        url, model = params.get("url"), params.get("model")
        if not isinstance(url, str) or not isinstance(model, str) or not model:
            raise ConfigError("Remote needs 'url' (http://host:port or grpc://host:port) and 'model'", node=node)
        self.model: str = model
        parts = urlsplit(url)
        if parts.scheme not in ("http", "grpc") or not parts.hostname or not parts.port:
            raise ConfigError(f"expected http://host:port or grpc://host:port, got {url!r}", node=node, key="url")
        self.peer = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        self.version = str(params.get("model_version", ""))
        self.retries = _positive_int(params, "retries", 3, node)
        failures = _positive_int(params, "breaker_failures", 5, node)
        cooldown = _number(params, "breaker_cooldown", 5000.0, node) / 1e3
        connect = _number(params, "connect_timeout", 10000.0, node) / 1e3
        self.transport: _Http | _Grpc = (
            _Grpc(f"{parts.hostname}:{parts.port}") if parts.scheme == "grpc" else _Http(parts.hostname, parts.port)
        )
        try:
            self.signature = self._signature(params, node, connect)
        except BaseException:
            self.transport.close()
            raise
        self.breaker = _breaker(self.peer, self.model, failures, cooldown)
        self.node_max = _positive_int(params, "max", 0, node, minimum=0)  # 0: the peer's

    def max(self) -> int:
        peer = max(1, self.signature.max_batch_size)
        return min(peer, self.node_max) if self.node_max else peer

    # ------------------------------------------------------------------ signature
    def _signature(self, params: Mapping[str, Any], node: str, timeout: float) -> _Signature:
        inputs, outputs = params.get("remote_inputs"), params.get("remote_outputs")
        declared = isinstance(inputs, list) and isinstance(outputs, list) and "max_batch_size" in params
        if declared:
            assert isinstance(inputs, list) and isinstance(outputs, list)
            return _Signature(
                tuple(_declared(entry, node, "remote_inputs") for entry in inputs),
                tuple(_declared(entry, node, "remote_outputs") for entry in outputs),
                _positive_int(params, "max_batch_size", 0, node, minimum=0),
            )
        try:
            metadata, batch = self._ask_peer(timeout)
        except (_Transient, _Answered, ValueError) as exc:
            raise ConfigError(
                f"cannot read model {self.model!r} from {self.peer} ({exc}); start the peer first, or declare "
                "remote_inputs/remote_outputs as full lists and max_batch_size",
                node=node,
            ) from exc
        if "max_batch_size" in params:
            batch = _positive_int(params, "max_batch_size", 0, node, minimum=0)
        return _Signature(
            _specs(metadata["inputs"], inputs, batch, "data", node, "remote_inputs"),
            _specs(metadata["outputs"], outputs, batch, "result", node, "remote_outputs"),
            batch,
        )

    def _ask_peer(self, timeout: float) -> tuple[dict[str, Any], int]:
        deadline = time.monotonic() + timeout
        delay = FIRST_BACKOFF
        while True:
            try:
                if isinstance(self.transport, _Grpc):
                    metadata = self.transport.metadata(self.model, self.version, timeout)
                    return metadata, self.transport.max_batch_size(self.model, self.version, timeout)
                base = f"/v2/models/{self.model}" + (f"/versions/{self.version}" if self.version else "")
                metadata = self.transport.get(base, timeout)
                config = self.transport.get(base + "/config", timeout)
                return metadata, int(config.get("max_batch_size", 0))
            except _Transient:
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF)

    # ------------------------------------------------------------------ forward
    def forward(self, items: list[dict[str, Any]]) -> None:
        wait = self.breaker.admit()
        if wait is not None:
            error = self._error(
                f"failed {self.breaker.failures} times in a row: failing fast for {wait:.1f} s more (circuit open)"
            )
            raise PartialFailure(dict.fromkeys(range(len(items)), error))
        try:
            self._forward(items)
        finally:
            self.breaker.settle()  # a probe that ended without reaching the peer either way

    def _forward(self, items: list[dict[str, Any]]) -> None:
        signature = self.signature
        tensors = oip.stack_outputs(items, signature.inputs)  # ContractError: an item does not fit
        if not signature.max_batch_size:  # a model without a batch dimension: one item, as it is
            tensors = [oip.Tensor(t.name, t.datatype, t.data[0]) for t in tensors]
        response = self._send(tensors, self.options.remaining(), len(items))
        outputs = response.outputs
        if not signature.max_batch_size:
            outputs = tuple(oip.Tensor(t.name, t.datatype, t.data[None, ...]) for t in outputs)
        try:
            parts = oip.split_batch(_by_name(outputs, signature.outputs), signature.outputs)
            if len(parts) != len(items):
                raise ValueError(f"{len(parts)} results for a batch of {len(items)}")
        except Exception as exc:  # the answer as a whole is unusable: no item-by-item re-run
            error = self._error(f"answered with unusable outputs: {exc}")
            raise PartialFailure(dict.fromkeys(range(len(items)), error)) from exc
        for item, part in zip(items, parts, strict=True):
            item.update(part)

    def _error(self, what: str) -> RemoteError:
        return RemoteError(f"peer {self.peer} model {self.model!r} {what}", node=self.options.node, peer=self.peer)

    def _send(self, tensors: Sequence[oip.Tensor], remaining: float | None, count: int) -> oip.InferResponse:
        """The response, retrying what is worth it while the deadline allows (NOTE [remote calls])."""

        def fail_all(error: RequestError) -> PartialFailure:
            # Every item failed for the same reason: no item-by-item re-run.
            return PartialFailure(dict.fromkeys(range(count), error))

        end = None if remaining is None else time.monotonic() + remaining
        traceparent = self.options.traceparent()  # the peer's spans join the batch's trace
        requested = tuple(oip.RequestedOutput(spec.name, binary=True) for spec in self.signature.outputs)
        delay, attempt = FIRST_BACKOFF, 0
        while True:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:  # waited too long here, or in retries: not the peer's fault
                late = f"node {self.options.node!r}: the deadline passed before {self.peer} answered"
                raise fail_all(RequestTimeout(late, node=self.options.node))
            parameters: dict[str, Any] = {} if left is None else {"timeout": max(1, int(left * 1e6))}
            request = oip.InferRequest(tuple(tensors), outputs=requested, parameters=parameters)
            attempt += 1
            try:
                timeout = NO_DEADLINE_TIMEOUT if left is None else left
                response = self.transport.infer(self.model, self.version, request, timeout, traceparent)
            except _TimedOut as exc:  # the peer is slow, or its queue long: up, but too late
                self.breaker.succeeded()
                raise fail_all(self._error(f"did not answer in time: {exc}")) from None
            except _Answered as exc:
                self.breaker.succeeded()  # the peer is up: it answered
                raise RemoteError(f"peer {self.peer} refused the batch: {exc}", peer=self.peer) from None
            except _Transient as exc:
                left = None if end is None else end - time.monotonic()
                if (left is not None and left <= delay) or (left is None and attempt >= self.retries):
                    self.breaker.failed()
                    raise fail_all(self._error(f"unreachable after {attempt} attempt(s): {exc}")) from None
                time.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF)
                continue
            self.breaker.succeeded()
            return response

    def close(self) -> None:
        self.transport.close()


# ------------------------------------------------------------------------------------------ helpers
def _by_name(outputs: Sequence[oip.Tensor], specs: Sequence[TensorSpec]) -> list[oip.Tensor]:
    found = {tensor.name: tensor for tensor in outputs}
    missing = [spec.name for spec in specs if spec.name not in found]
    if missing:
        raise ValueError(f"no output(s) {missing}")
    return [found[spec.name] for spec in specs]


def _specs(
    described: Sequence[Mapping[str, Any]], mapping: Any, batch: int, single: str, node: str, key: str
) -> tuple[TensorSpec, ...]:
    """The tensors of the metadata, each with the item key it maps to (see NOTE [remote calls])."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise ConfigError("expected a table of remote name = item key, or a list of declarations", node=node, key=key)
    names = [str(entry["name"]) for entry in described]
    if mapping is not None:
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ConfigError(f"the remote model has no tensor(s) {unknown}; it has {names}", node=node, key=key)
    specs = []
    for entry in described:
        name = str(entry["name"])
        shape = tuple(int(d) for d in entry["shape"])
        if batch:
            shape = shape[1:]  # the metadata's shapes lead with the batch dimension (-1)
        if mapping is not None:
            if name not in mapping:
                continue
            item_key = str(mapping[name])
        else:
            item_key = single if len(described) == 1 else name
        specs.append(TensorSpec(name, str(entry["datatype"]), shape, item_key))
    return tuple(specs)


def _declared(entry: Any, node: str, key: str) -> TensorSpec:
    if not isinstance(entry, Mapping) or not {"name", "datatype", "shape", "key"} <= set(entry):
        raise ConfigError("each declaration needs name, datatype, shape and key", node=node, key=key)
    shape = tuple(int(d) for d in entry["shape"])
    return TensorSpec(str(entry["name"]), str(entry["datatype"]), shape, str(entry["key"]))


def _number(params: Mapping[str, Any], key: str, default: float, node: str) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"expected a number >= 0, got {value!r}", node=node, key=key)
    return float(value)


def _positive_int(params: Mapping[str, Any], key: str, default: int, node: str, *, minimum: int = 1) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"expected an integer >= {minimum}, got {value!r}", node=node, key=key)
    return value
