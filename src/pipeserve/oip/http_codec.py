"""HTTP/REST bodies of the Open Inference Protocol, with Triton's binary tensor data extension.

A body is a JSON document, optionally followed by binary tensor data. When binary data
follows, the ``Inference-Header-Content-Length`` header (:data:`HEADER_LENGTH`) gives the JSON
part's length, and each tensor sent in binary has ``parameters.binary_data_size`` instead of
``data``; the binary parts follow the JSON in the order of those tensors (see
:mod:`pipeserve.oip.raw` for their layout). JSON ``data`` is a flat or nested (row-major) list:
numbers, ``true``/``false`` for BOOL, UTF-8 strings for BYTES.

Server side: :func:`decode_request`, :func:`encode_response`, :func:`error_body`. Client side
(the remote backend): :func:`encode_request`, :func:`decode_response`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import InputError, TensorSpec
from .http_fast import SCALARS, inputs_from_json_fast
from .http_tensors import json_text, parameters_from_json, tensors_from_json, tensors_to_json
from .messages import InferRequest, InferResponse, Parameter, RequestedOutput, select_outputs
from .plan import plan_of
from .validate import check_request, check_requested

__all__ = ["HEADER_LENGTH", "decode_request", "decode_response", "encode_request", "encode_response", "error_body"]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The HTTP header that gives the JSON part's length when binary data follows it."""


def decode_request(
    body: bytes,
    header_length: int | str | None,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> InferRequest:
    """Decode and validate an infer request body against the model's declared signature.

    Args:
        body: the whole HTTP request body.
        header_length: the :data:`HEADER_LENGTH` header's value, or ``None`` when absent (the
            body is then all JSON).
        inputs: the model's declared inputs.
        outputs: the model's declared outputs.

    Returns:
        The request, its inputs in declared order (see :func:`~pipeserve.oip.validate.check_request`).

    Raises:
        InputError: a malformed body or one that does not fit the signature; the message says
            what was expected.
    """
    document, binary = _split(body, header_length, "request")
    request = _decode_fast(document, binary, inputs, outputs)
    if request is not None:
        return request
    request = InferRequest(
        inputs=tensors_from_json(document.get("inputs"), binary, "input"),
        id=_request_id(document),
        outputs=_requested_outputs(document.get("outputs")),
        parameters=parameters_from_json(document.get("parameters"), "request"),
    )
    return check_request(request, inputs, outputs)


def _decode_fast(
    document: dict[str, Any], binary: memoryview, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> InferRequest | None:
    """The request of a well-formed, valid body in one pass; ``None`` for the general path (NOTE [fast path])."""
    tensors = inputs_from_json_fast(document.get("inputs"), binary, plan_of(inputs))
    if tensors is None:
        return None
    request_id = document.get("id", "")
    if type(request_id) is not str:
        return None
    raw = document.get("parameters")
    if raw is None:
        parameters: dict[str, Parameter] = {}
    else:
        if type(raw) is not dict:
            return None
        for value in raw.values():
            if type(value) not in SCALARS:
                return None
        timeout = raw.get("timeout")
        binary_output = raw.get("binary_data_output")
        if (timeout is not None and (type(timeout) is not int or timeout < 0)) or (
            binary_output is not None and type(binary_output) is not bool
        ):
            return None
        parameters = dict(raw)
    raw = document.get("outputs")
    requested = None
    if raw is not None:
        try:
            requested = _requested_outputs(raw)
            if requested is not None:
                check_requested(requested, [spec.name for spec in outputs])
        except InputError:
            return None
    return InferRequest(tensors, request_id, requested, parameters)


def encode_response(response: InferResponse, request: InferRequest | None = None) -> tuple[bytes, int | None]:
    """Encode ``response`` as an HTTP body, with the outputs and forms ``request`` asked for.

    Only the requested outputs are sent when the request names some. An output goes in binary
    when its ``binary_data`` parameter says so, else when the request's ``binary_data_output``
    parameter is true, else as JSON ``data``. A BYTES output that is not valid UTF-8, and a
    BF16 output, go in binary whatever was asked, since JSON cannot carry them faithfully.

    Returns:
        The body and the JSON part's length for the :data:`HEADER_LENGTH` response header,
        ``None`` when the body is all JSON (the header is then left out).

    Raises:
        InputError: the request names an output that ``response`` lacks.
    """
    if request is None:
        entries, chunks = tensors_to_json(response.outputs, False)
    else:
        requested = request.outputs
        selected = response.outputs if requested is None else select_outputs(response.outputs, requested)
        default = request.parameters.get("binary_data_output") is True
        forms = {output.name: output.binary for output in requested} if requested else None
        entries, chunks = tensors_to_json(selected, default, forms)
    # The document as json.dumps(..., separators=(",", ":")) writes it, assembled directly.
    text = '{"model_name":' + json_text(response.model_name) + ',"model_version":' + json_text(response.model_version)
    if response.id:
        text += ',"id":' + json_text(response.id)
    if response.parameters:
        text += ',"parameters":' + json_text(dict(response.parameters))
    return _join(text + ',"outputs":' + entries + "}", chunks)


def error_body(message: str) -> bytes:
    """The protocol's error body, ``{"error": message}``, as UTF-8 JSON."""
    return json.dumps({"error": message}).encode("utf-8")


def encode_request(request: InferRequest, *, binary: bool = True) -> tuple[bytes, int | None]:
    """Encode ``request`` as an HTTP body (for a client such as the remote backend).

    Args:
        request: the request; its requested outputs keep their ``binary`` flags.
        binary: send every input as binary data (fast) rather than JSON ``data``.

    Returns:
        The body and the JSON part's length for the :data:`HEADER_LENGTH` header (``None``
        when the body is all JSON).
    """
    entries, chunks = tensors_to_json(request.inputs, binary)
    members = []
    if request.id:
        members.append('"id":' + json_text(request.id))
    if request.parameters:
        members.append('"parameters":' + json_text(dict(request.parameters)))
    members.append('"inputs":' + entries)
    if request.outputs is not None:
        members.append('"outputs":' + json_text([_requested_to_json(output) for output in request.outputs]))
    return _join("{" + ",".join(members) + "}", chunks)


def decode_response(body: bytes, header_length: int | str | None) -> InferResponse:
    """Decode an infer response body (for a client such as the remote backend).

    Raises:
        InputError: a malformed body, or one that carries ``{"error": ...}`` (the message is the
            server's).
    """
    document, binary = _split(body, header_length, "response")
    if "error" in document:
        raise InputError(f"the server answered with an error: {document['error']}")
    name, version = document.get("model_name", ""), document.get("model_version", "")
    if not isinstance(name, str) or not isinstance(version, str):
        raise InputError("response: 'model_name' and 'model_version' must be strings")
    return InferResponse(
        model_name=name,
        model_version=version,
        outputs=tensors_from_json(document.get("outputs"), binary, "output"),
        id=_request_id(document),
        parameters=parameters_from_json(document.get("parameters"), "response"),
    )


def _split(body: bytes, header_length: int | str | None, what: str) -> tuple[dict[str, Any], memoryview]:
    """The JSON document of ``body`` and the binary data after it (a view, not a copy)."""
    if header_length is None:
        length = len(body)
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise InputError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    try:
        document = _loads(body if length == len(body) else body[:length])
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise InputError(f"malformed JSON in the {what}: {error}") from None
    if not isinstance(document, dict):
        raise InputError(f"the {what} must be a JSON object, got {type(document).__name__}")
    return document, _NO_BINARY if length == len(body) else memoryview(body)[length:]


_NO_BINARY = memoryview(b"")
_DECODER = json.JSONDecoder()


def _loads(data: bytes) -> Any:
    """``json.loads(data)``, quicker for the usual body: UTF-8 text that is one JSON object.

    ``json.loads`` guesses the encoding of bytes and then allows whitespace around the document;
    a body that starts with ``{`` and a byte other than NUL is UTF-8 to it, and one that ends
    with the document needs no trimming. Anything else, faults included, goes to ``json.loads``.
    """
    if data[:1] == b"{" and data[1:2] != b"\x00":
        try:
            text = data.decode("utf-8", "surrogatepass")
            document, end = _DECODER.raw_decode(text)
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            pass
        else:
            if end == len(text):
                return document
    return json.loads(data)


def _join(document: str, chunks: list[bytes]) -> tuple[bytes, int | None]:
    # json_text escapes non-ASCII, so the header is plain ASCII and its length in bytes is certain.
    header = document.encode("ascii")
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _request_id(document: dict[str, Any]) -> str:
    value = document.get("id", "")
    if not isinstance(value, str):
        raise InputError(f"'id' must be a string, got {value!r}")
    return value


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InputError(f"'outputs' must be a list, got {type(raw).__name__}")
    requested = []
    for index, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise InputError(f"outputs[{index}] must be an object with a string 'name', got {entry!r}")
        parameters = parameters_from_json(entry.get("parameters"), f"output {name!r}")
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in parameters:
                raise InputError(f"output {name!r}: parameter {unsupported!r} is not supported")
        flag = parameters.get("binary_data")
        if flag is not None and not isinstance(flag, bool):
            raise InputError(f"output {name!r}: 'binary_data' must be true or false, got {flag!r}")
        requested.append(RequestedOutput(name, flag))
    return tuple(requested)


def _requested_to_json(output: RequestedOutput) -> dict[str, Any]:
    if output.binary is None:
        return {"name": output.name}
    return {"name": output.name, "parameters": {"binary_data": output.binary}}
