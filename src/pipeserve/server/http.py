"""The Open Inference Protocol over HTTP/REST, as an ASGI application (Triton's paths).

The app is plain ASGI, with no web framework under it: a request goes from the server's parser
straight to a small router and the codec (:mod:`pipeserve.oip`), which keeps the per-request
cost near the server stack's own. Mount it anywhere ASGI runs (``pipeserve.server.app``).

NOTE [disconnect]
While a request is in the pipe, the handler also waits for the client to go away (the ASGI
``http.disconnect`` message). If it does first, the pipe's items are cancelled: those still
queued are dropped and never reach a backend (they count as ``dropped`` in the pipe's
statistics); a batch already running finishes, and its result is thrown away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import InputError, __version__, oip
from .errors import BodyTooLarge, ModelNotFound, status_of
from .observe import Observatory
from .state import ServerState, config_parameter

__all__ = ["HttpApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

access_log = logging.getLogger("pipeserve.access")

EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "model_repository", "parameters")
_JSON = [(b"content-type", b"application/json")]
_HEADER = oip.HEADER_LENGTH.lower().encode("latin-1")


class _Gone(Exception):
    """The client disconnected: there is nobody to answer (NOTE [disconnect])."""


class _Reply(Exception):
    """Answer with this status and body now (routing outcomes that are not errors of ours)."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class HttpApp:
    """The ASGI application of a server.

    Args:
        state: the server's models and readiness.
        max_body: the largest request body accepted, in bytes (larger: 413).
    """

    def __init__(self, state: ServerState, *, max_body: int = 64 * 1024 * 1024, metrics: bool | None = None) -> None:
        self.state = state
        self.max_body = max_body
        self.observatory = Observatory(state, metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        status, model, request_id = 500, "", ""
        try:
            status, model, request_id = await self._route(scope, receive, send)
        except _Gone:
            status = 499  # the client closed the request (logged as nginx does)
        except Exception as exc:  # noqa: BLE001 - every request gets an answer
            status = await _error(send, exc)
        if self.state.access_log:
            access_log.info(
                "%s %s %d id=%s model=%s %.3f ms",
                scope["method"],
                scope["path"],
                status,
                request_id or "-",
                model or "-",
                1e3 * (time.perf_counter() - start),
            )

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, str, str]:
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        if parts[0] != "v2":
            _expect(method, "GET")
            await self._observe(send, parts)
            return 200, "", ""
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "models" and not (len(rest) == 2 and rest[1] == "stats"):
            model, tail = rest[1], rest[2:]
            if len(tail) >= 2 and tail[0] == "versions":
                if tail[1] != "1":
                    raise ModelNotFound(f"unknown version {tail[1]!r} of model {model!r}; pipeserve serves version 1")
                tail = tail[2:]
            action = tail[0] if len(tail) == 1 else "" if not tail else "?"
            if action == "infer":
                _expect(method, "POST")
                return await self._infer(scope, receive, send, model)
            if action == "autotune":
                await self._autotune(scope, receive, send, model)
                return 200, model, ""
            _expect(method, "GET")
            if action == "":
                await _json(send, 200, oip.model_metadata(self.state.repository.get(model).description))
            elif action == "ready":
                self.state.repository.get(model)
                await _send(send, 200, b"", [])
            elif action == "config":
                await _json(send, 200, oip.model_config(self.state.repository.get(model).description))
            elif action == "stats":
                await _json(send, 200, oip.model_statistics([self.state.repository.get(model).counters()]))
            else:
                raise _Reply(404, oip.error_body("Not Found"))
            return 200, model, ""
        key = "/".join(rest)
        if key in ("health/live", "health/ready", "", "models/stats"):
            _expect(method, "GET")
            if key == "health/live":
                await _send(send, 200 if self.state.live else 503, b"", [])
            elif key == "health/ready":
                await _send(send, 200 if self.state.ready else 503, b"", [])
            elif key == "":
                await _json(send, 200, {"name": "pipeserve", "version": __version__, "extensions": list(EXTENSIONS)})
            else:
                models = self.state.repository.ready_models()
                await _json(send, 200, oip.model_statistics([m.counters() for m in models]))
            return 200, "", ""
        if key == "repository/index" or (len(rest) == 4 and rest[:2] == ["repository", "models"]):
            _expect(method, "POST")
            body = await _read(scope, receive, self.max_body)
            document = _document(body)
            if key == "repository/index":
                ready_only = bool(document.get("ready", False))
                await _json(send, 200, [_index_entry(s) for s in self.state.repository.index(ready_only)])
                return 200, "", ""
            model, verb = rest[2], rest[3]
            if verb == "load":
                await self.state.load(model, config_parameter(_config_parameter(document)))
            elif verb == "unload":
                await self.state.unload(model)
            else:
                raise _Reply(404, oip.error_body("Not Found"))
            await _send(send, 200, b"", [])
            return 200, model, ""
        raise _Reply(404, oip.error_body("Not Found"))

    async def _autotune(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """``GET /v2/models/{m}/autotune``: the tuner's status (NOTE [autotune]); ``POST`` with
        ``{"frozen": true|false}`` freezes or unfreezes it first. 404 for a model without one."""
        pipe = self.state.repository.get(name).pipe
        tuner = pipe.autotune
        if tuner is None:
            raise _Reply(404, oip.error_body(f"model {name!r} has no autotune table"))
        if scope["method"] == "POST":
            document = _document(await _read(scope, receive, self.max_body))
            frozen = document.get("frozen")
            if not isinstance(frozen, bool):
                raise _Reply(400, oip.error_body('expected {"frozen": true} or {"frozen": false}'))
            if frozen:
                tuner.freeze()
            else:
                tuner.unfreeze()
        else:
            _expect(scope["method"], "GET")
        await _json(send, 200, tuner.status())

    async def _observe(self, send: Send, parts: list[str]) -> None:
        """``/metrics``, ``/status.json``, the status page (``/``) and its files (``/static/F``)."""
        observatory = self.observatory
        if parts == ["metrics"]:
            exported = await asyncio.to_thread(observatory.metrics)
            if exported is None:
                raise _Reply(404, oip.error_body("metrics are off (install prometheus-client, or drop --no-metrics)"))
            body, content_type = exported
            await _send(send, 200, body, [(b"content-type", content_type.encode("latin-1"))])
            return
        if parts == ["status.json"]:
            await _json(send, 200, await asyncio.to_thread(observatory.status))
            return
        if parts == [""]:
            found = observatory.static("index.html")
        elif len(parts) == 2 and parts[0] == "static":
            found = observatory.static(parts[1])
        else:
            found = None
        if found is None:
            raise _Reply(404, oip.error_body("Not Found"))
        body, content_type = found
        headers = [(b"content-type", content_type.encode("latin-1")), (b"cache-control", b"no-cache")]
        await _send(send, 200, body, headers)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str) -> tuple[int, str, str]:
        self.state.repository.get(name)  # an unknown model is 404 before its body is read
        body = await _read(scope, receive, self.max_body)
        header_length = None
        accept = b""
        traceparent: str | None = None
        for key, value in scope["headers"]:
            if key == _HEADER:
                header_length = value.decode("latin-1")
            elif key == b"accept-encoding":
                accept = value
            elif key == b"traceparent":
                traceparent = value.decode("latin-1")
        model, submitted = self.state.submit(
            name,
            lambda model: oip.http_codec.decode_request(
                body, header_length, inputs=model.inputs, outputs=model.outputs
            ),
            None,
            traceparent,
        )
        request = submitted.request
        if not submitted.done:
            await _unless_gone(model.wait(submitted), receive)
        response = model.respond(submitted)
        payload, json_length = oip.http_codec.encode_response(response, request)
        headers = [(b"content-type", b"application/octet-stream" if json_length is not None else b"application/json")]
        if json_length is not None:
            headers.append((_HEADER, str(json_length).encode("latin-1")))
        if accept:
            payload = _compress(payload, accept, headers)
        await _send(send, 200, payload, headers)
        return 200, name, request.id


async def _unless_gone(work: Awaitable[None], receive: Receive) -> None:
    """``work``'s result, unless the client disconnects first (NOTE [disconnect]): a watcher
    task waits for the disconnect and cancels this task if it comes first."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    def cancel_work(watcher: asyncio.Future[None]) -> None:
        nonlocal gone
        if not watcher.cancelled() and watcher.exception() is None:
            gone = True
            current.cancel()

    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(cancel_work)
    try:
        await work
    except asyncio.CancelledError:
        if gone:
            raise _Gone() from None
        raise
    finally:
        watcher.remove_done_callback(cancel_work)
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, decompressed (``Content-Encoding`` gzip or deflate), at most ``limit``
    bytes.

    Raises:
        BodyTooLarge: over the limit. InputError: an unknown encoding or a corrupt stream.
    """
    encoding = b""
    for key, value in scope["headers"]:
        if key == b"content-length" and int(value) > limit:
            raise BodyTooLarge(f"request body of {int(value)} bytes exceeds the limit of {limit} bytes")
        if key == b"content-encoding":
            encoding = value.strip().lower()
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if encoding in (b"", b"identity"):
        return body
    if encoding not in (b"gzip", b"deflate"):
        raise InputError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip or deflate")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == b"gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InputError(f"corrupt {encoding.decode('latin-1')} body: {exc}") from exc
    if len(inflated) > limit:
        raise BodyTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return inflated


def _compress(payload: bytes, accept: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Compress the response if the client accepts gzip or deflate (the highest ``q`` wins)."""
    best, best_q = b"", 0.0
    for entry in accept.lower().split(b","):
        name, _, params = entry.strip().partition(b";")
        q = 1.0
        if params.strip().startswith(b"q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if name in (b"gzip", b"deflate") and q > best_q:
            best, best_q = name, q
    if not best:
        return payload
    headers.append((b"content-encoding", best))
    if best == b"gzip":
        packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        return packer.compress(payload) + packer.flush()
    return zlib.compress(payload, 6)


def _document(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InputError(f"malformed JSON body: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError("expected a JSON object")
    return document


def _config_parameter(document: dict[str, Any]) -> Any:
    """The raw ``config`` parameter of a load request body (see :func:`config_parameter`)."""
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError("'parameters' must be an object")
    return parameters.get("config")


def _index_entry(state: Any) -> dict[str, str]:
    entry = {"name": state.name, "version": "1", "state": state.state}
    if state.reason:
        entry["reason"] = state.reason
    return entry


def _expect(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Reply(405, oip.error_body("Method Not Allowed"))


async def _json(send: Send, status: int, document: Any) -> None:
    await _send(send, status, json.dumps(document, separators=(",", ":")).encode("utf-8"), _JSON)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode("latin-1"))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, exc: BaseException) -> int:
    if isinstance(exc, _Reply):
        await _send(send, exc.status, exc.body, _JSON if exc.body else [])
        return exc.status
    status = status_of(exc)
    headers = list(_JSON)
    if status.retry_after is not None:
        headers.append((b"retry-after", str(status.retry_after).encode("latin-1")))
    await _send(send, status.http, oip.error_body(status.message), headers)
    return status.http


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
