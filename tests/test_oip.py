"""The Open Inference Protocol codec: datatypes, HTTP/JSON and binary, gRPC, batching, metadata.

Compatibility is checked against the real client library (``tritonclient``) where installed:
its request builders feed our decoders, and its response parsers read our encoders' output.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from typing import Any

import numpy as np
import pytest

from pipeserve.errors import ConfigError, ContractError, InputError, MissingDependencyError
from pipeserve.oip import (
    DATATYPES,
    HEADER_LENGTH,
    Duration,
    InferRequest,
    InferResponse,
    ModelCounters,
    ModelDescription,
    RequestedOutput,
    Tensor,
    check_signature,
    config_name,
    datatype_from_config,
    datatype_of,
    decode_raw,
    element_size,
    encode_raw,
    error_body,
    grpc_codec,
    http_codec,
    model_config,
    model_metadata,
    model_statistics,
    numpy_dtype,
    split_batch,
    stack_outputs,
)
from pipeserve.signature import DATATYPES as DECLARABLE
from pipeserve.signature import TensorSpec

# ---------------------------------------------------------------------------------------------
# Helpers


def has_bf16() -> bool:
    try:
        numpy_dtype("BF16")
    except InputError:
        return False
    return True


ALL_TYPES = [t for t in DATATYPES if t != "BF16" or has_bf16()]
JSON_TYPES = [t for t in ALL_TYPES if t != "BF16"]  # BF16 always travels in binary


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray[Any, Any]:
    """A tensor of ``datatype`` with edge values (integer extremes, non-ASCII text, empty strings)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        texts = [b"", "\u00e9t\u00e9".encode(), b"abc", b"x" * 70, b"0", b"{}"]
        return np.array((texts * count)[:count], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return np.array(([True, False, False] * count)[:count]).reshape(shape)
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values: list[float] = [int(info.min), int(info.max), 0, 1, 7, int(info.max) - 1]
    else:
        values = [0.5, -1.25, 0.0, 3.0, -0.125, 1024.0]
    return np.array((values * count)[:count], dtype=dtype).reshape(shape)


def assert_same(tensor: Tensor, expected: np.ndarray[Any, Any]) -> None:
    assert tensor.data.dtype == numpy_dtype(tensor.datatype)
    assert tensor.shape == expected.shape
    if tensor.datatype == "BYTES":
        assert tensor.data.tolist() == expected.tolist()
        assert all(type(v) is bytes for v in tensor.data.reshape(-1))
    else:
        np.testing.assert_array_equal(tensor.data.astype(np.float64), expected.astype(np.float64))


def spec(name: str, datatype: str, shape: tuple[int, ...], key: str | None = None, as_json: bool = False) -> TensorSpec:
    return TensorSpec(name, datatype, shape, key or name, as_json)


def body_of(document: dict[str, Any], *chunks: bytes) -> tuple[bytes, int | None]:
    header = json.dumps(document).encode()
    return header + b"".join(chunks), (len(header) if chunks else None)


def http_error(document: dict[str, Any], *chunks: bytes, inputs: list[TensorSpec], outputs: Any = ()) -> str:
    body, length = body_of(document, *chunks)
    with pytest.raises(InputError) as caught:
        http_codec.decode_request(body, length, inputs=inputs, outputs=outputs)
    return str(caught.value)


X4 = [spec("x", "FP32", (4,))]

# ---------------------------------------------------------------------------------------------
# The datatype table


def test_every_declarable_datatype_has_a_row_with_size_and_config_name() -> None:
    assert set(DATATYPES) == set(DECLARABLE)
    assert config_name("FP32") == "TYPE_FP32"
    assert config_name("BYTES") == "TYPE_STRING"
    assert datatype_from_config("TYPE_STRING") == "BYTES"
    assert [element_size(t) for t in ("BOOL", "UINT16", "INT64", "FP16", "BF16", "BYTES")] == [1, 2, 8, 2, 2, None]
    for datatype in DATATYPES:
        assert datatype_from_config(config_name(datatype)) == datatype
    for datatype in ALL_TYPES:
        assert datatype_of(numpy_dtype(datatype)) == datatype
    assert datatype_of(np.dtype("S3")) == "BYTES"


def test_unknown_names_and_types_raise_input_error() -> None:
    with pytest.raises(InputError, match="unknown datatype 'FP8'"):
        numpy_dtype("FP8")
    with pytest.raises(InputError, match="unknown configuration datatype 'TYPE_X'"):
        datatype_from_config("TYPE_X")
    with pytest.raises(InputError, match="complex128 has no Open Inference Protocol datatype"):
        datatype_of(np.dtype(np.complex128))


def test_bf16_without_a_numpy_bfloat16_type_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes `import ml_dtypes` fail
    with pytest.raises(InputError, match="BF16 tensors need a numpy bfloat16 type"):
        numpy_dtype("BF16")
    assert config_name("BF16") == "TYPE_BF16"  # still declarable and describable
    body, length = body_of({"inputs": [{"name": "b", "datatype": "BF16", "shape": [1, 1], "data": [1.0]}]})
    with pytest.raises(InputError, match="bfloat16"):
        http_codec.decode_request(body, length, inputs=[spec("b", "BF16", (1,))], outputs=[])


def test_tensor_rejects_data_of_the_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="FP32 data must be a numpy float32 array, got float64"):
        Tensor("x", "FP32", np.zeros(2))


# ---------------------------------------------------------------------------------------------
# Raw bytes


def test_bytes_elements_carry_a_4_byte_little_endian_length() -> None:
    data = np.array([b"ab", b"", b"\xff"], dtype=object)
    raw = encode_raw("BYTES", data)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00\xff"
    assert decode_raw("BYTES", (3,), raw).tolist() == [b"ab", b"", b"\xff"]
    big = np.array([b"y" * 300], dtype=object)
    assert encode_raw("BYTES", big)[:4] == struct.pack("<I", 300)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00\x00\x00ab", "BYTES element 0 claims 5 bytes but only 2 remain"),
        (b"\x01\x00\x00\x00a", r"BYTES \[2\] needs 2 elements, but the data ends after 1"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b!", "but 1 bytes follow them"),
    ],
)
def test_malformed_bytes_data_is_described(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_raw("BYTES", (2,), raw)


def test_raw_numbers_are_little_endian_and_decoded_arrays_are_writable() -> None:
    assert encode_raw("INT32", np.array([1, 256], dtype=">i4")) == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    array = decode_raw("UINT16", (2,), memoryview(b"\x01\x00\x00\x01"))
    assert array.tolist() == [1, 256]
    array[0] = 5  # the decoder copies: a backend may work in place
    with pytest.raises(ValueError, match="3 bytes but 4 bytes are needed for UINT16 \\[2\\]"):
        decode_raw("UINT16", (2,), b"\x00\x00\x00")


# ---------------------------------------------------------------------------------------------
# Round trips through our own encoders and decoders


@pytest.mark.parametrize("datatype", ALL_TYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_request_and_response_round_trip(datatype: str, binary: bool) -> None:
    data = sample(datatype)
    request = InferRequest((Tensor("t", datatype, data),), id="r7", parameters={"timeout": 1500, "custom": "v"})
    body, length = http_codec.encode_request(request, binary=binary)
    assert (length is not None) == (binary or datatype == "BF16")
    decoded = http_codec.decode_request(body, length, inputs=[spec("t", datatype, (3,))], outputs=[])
    assert decoded.id == "r7"
    assert decoded.parameters == {"timeout": 1500, "custom": "v"}
    assert decoded.timeout_s == pytest.approx(0.0015)
    assert_same(decoded.inputs[0], data)

    response = InferResponse("m", (Tensor("t", datatype, data),), id="r7")
    asked = InferRequest((), outputs=(RequestedOutput("t", binary),))
    body, length = http_codec.encode_response(response, asked)
    back = http_codec.decode_response(body, length)
    assert (back.model_name, back.model_version, back.id) == ("m", "1", "r7")
    assert_same(back.outputs[0], data)


@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_grpc_request_and_response_round_trip_through_the_wire(datatype: str) -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import service_pb2

    data = sample(datatype)
    request = InferRequest(
        (Tensor("t", datatype, data),), id="g1", parameters={"timeout": 9, "flag": True, "f": 0.5, "s": "x"}
    )
    wire = grpc_codec.encode_request(request).SerializeToString()
    decoded = grpc_codec.decode_request(
        service_pb2.ModelInferRequest.FromString(wire), inputs=[spec("t", datatype, (3,))], outputs=[]
    )
    assert decoded.id == "g1"
    assert decoded.parameters == {"timeout": 9, "flag": True, "f": 0.5, "s": "x"}
    assert_same(decoded.inputs[0], data)

    response = InferResponse("m", (Tensor("t", datatype, data),), id="g1")
    wire = grpc_codec.encode_response(response).SerializeToString()
    back = grpc_codec.decode_response(service_pb2.ModelInferResponse.FromString(wire))
    assert (back.model_name, back.id) == ("m", "g1")
    assert_same(back.outputs[0], data)


@pytest.mark.parametrize("datatype", [t for t in JSON_TYPES if DATATYPES[t].contents])
def test_grpc_typed_contents_decode_like_raw_contents(datatype: str) -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import service_pb2

    data = sample(datatype)
    message = service_pb2.ModelInferRequest()
    tensor = message.inputs.add(name="t", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, DATATYPES[datatype].contents).extend(data.reshape(-1).tolist())
    decoded = grpc_codec.decode_request(message, inputs=[spec("t", datatype, (3,))], outputs=[])
    assert_same(decoded.inputs[0], data)


# ---------------------------------------------------------------------------------------------
# JSON data forms


@pytest.mark.parametrize(
    "data",
    [[1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]], [[1, 2], [3, 4], [5, 6]], [[1, 2, 3, 4], [5], [6]]],
    ids=["flat", "nested", "other-nesting", "ragged"],
)
def test_json_data_may_be_flat_or_nested_in_row_major_order(data: list[Any]) -> None:
    body, length = body_of({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 3], "data": data}]})
    request = http_codec.decode_request(body, length, inputs=[spec("x", "INT32", (3,))], outputs=[])
    assert request.inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_json_bool_is_true_false_and_bytes_are_utf8_strings() -> None:
    document = {
        "inputs": [
            {"name": "b", "datatype": "BOOL", "shape": [2, 1], "data": [[True], [False]]},
            {"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": ["\u00e9", ""]},
        ]
    }
    body, length = body_of(document)
    inputs = [spec("b", "BOOL", (1,)), spec("s", "BYTES", (1,))]
    request = http_codec.decode_request(body, length, inputs=inputs, outputs=[])
    assert request.inputs[0].data.tolist() == [[True], [False]]
    assert request.inputs[1].data.tolist() == [["\u00e9".encode()], [b""]]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("BOOL", [1, 0], "input 'x': BOOL needs booleans, got integers"),
        ("INT32", [1.5, 2], "input 'x': INT32 needs integers, got floats"),
        ("UINT8", [300, 1], "input 'x': value 300 is out of range for UINT8 [0, 255]"),
        ("INT8", [-129, 1], "input 'x': value -129 is out of range for INT8 [-128, 127]"),
        ("FP32", ["1", "2"], "input 'x': FP32 needs numbers, got strings"),
        ("FP32", [1, None], "input 'x': FP32 needs numbers, got values of mixed or non-numeric types"),
        ("BYTES", ["a", 3], "input 'x': BYTES needs bytes or strings, got int at element 1"),
        ("FP32", [1.0, 2.0, 3.0], "input 'x': 'data' holds 3 values but FP32 [2, 1] needs 2"),
        ("FP32", 5, "input 'x': 'data' must be a list, got int"),
    ],
)
def test_json_values_of_the_wrong_kind_are_refused(datatype: str, data: Any, message: str) -> None:
    document = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 1], "data": data}]}
    assert http_error(document, inputs=[spec("x", datatype, (1,))]) == message


# ---------------------------------------------------------------------------------------------
# Validation: the same messages over HTTP and gRPC


def _both_transports(tensors: tuple[Tensor, ...], inputs: list[TensorSpec], outputs: Any = ()) -> list[str]:
    """Decode the same request sent over HTTP (binary and JSON) and gRPC; return each error message."""
    request = InferRequest(tensors, outputs=tuple(RequestedOutput(n) for n in outputs) or None)
    declared_outputs = [spec("out", "FP32", (1,))]
    messages = []
    for binary in (True, False):
        body, length = http_codec.encode_request(request, binary=binary)
        with pytest.raises(InputError) as caught:
            http_codec.decode_request(body, length, inputs=inputs, outputs=declared_outputs)
        messages.append(str(caught.value))
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return messages
    with pytest.raises(InputError) as caught:
        grpc_codec.decode_request(grpc_codec.encode_request(request), inputs=inputs, outputs=declared_outputs)
    messages.append(str(caught.value))
    return messages


def f32(name: str, *shape: int) -> Tensor:
    return Tensor(name, "FP32", np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(
    ("tensors", "inputs", "outputs", "message"),
    [
        (
            (Tensor("INPUT0", "INT32", np.zeros((2, 4), np.int32)),),
            [spec("INPUT0", "FP32", (4,))],
            (),
            "input 'INPUT0': expected datatype FP32, got INT32",
        ),
        (
            (f32("INPUT0", 2, 3),),
            [spec("INPUT0", "FP32", (4,))],
            (),
            "input 'INPUT0': expected shape [-1, 4] (a batch of [4] items), got [2, 3]",
        ),
        (
            (f32("INPUT0", 4),),
            [spec("INPUT0", "FP32", (4,))],
            (),
            "input 'INPUT0': expected shape [-1, 4] (a batch of [4] items), got [4]",
        ),
        ((f32("y", 1, 4),), X4, (), "unknown input 'y'; declared: ['x']"),
        ((), X4, (), "missing input 'x'; declared: ['x']"),
        ((f32("x", 2, 4), f32("x", 2, 4)), X4, (), "input 'x' is given twice"),
        (
            (f32("a", 2, 1), f32("b", 3, 1)),
            [spec("a", "FP32", (1,)), spec("b", "FP32", (1,))],
            (),
            "inputs disagree on the batch size (the first dimension): 'a' has 2, 'b' has 3",
        ),
        ((f32("x", 0, 4),), X4, (), "batch size 0: a request needs at least one item"),
        ((f32("x", 1, 4),), X4, ("nope",), "unknown output 'nope'; declared: ['out']"),
        ((f32("x", 1, 4),), X4, ("out", "out"), "output 'out' is requested twice"),
    ],
)
def test_validation_messages_are_the_same_over_http_and_grpc(
    tensors: tuple[Tensor, ...], inputs: list[TensorSpec], outputs: tuple[str, ...], message: str
) -> None:
    assert set(_both_transports(tensors, inputs, outputs)) == {message}


def test_validation_puts_inputs_in_declared_order() -> None:
    inputs = [spec("a", "FP32", (1,)), spec("b", "FP32", (-1,))]
    request = InferRequest((f32("b", 2, 5), f32("a", 2, 1)))
    body, length = http_codec.encode_request(request)
    decoded = http_codec.decode_request(body, length, inputs=inputs, outputs=[])
    assert [t.name for t in decoded.inputs] == ["a", "b"]


@pytest.mark.parametrize(
    ("document", "chunks", "message"),
    [
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 12}}]},
            [b"\x00" * 12],
            "input 'x': binary_data_size 12 but 16 bytes are needed for FP32 [2, 2]",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]},
            [b"\x00" * 8],
            "input 'x': binary_data_size 16, but only 8 bytes of binary data remain",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]},
            [b"\x00" * 20],
            "the body carries 20 bytes after the JSON header, but the inputs' binary_data_size parameters add up to 16",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": "16"}}]},
            [b"\x00" * 16],
            "input 'x': 'binary_data_size' must be a non-negative integer, got '16'",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 4],
                        "data": [1, 2, 3, 4],
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            [b"\x00" * 16],
            "input 'x': has both 'data' and a 'binary_data_size' parameter",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]},
            [],
            "input 'x': no 'data' and no 'binary_data_size' parameter",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"shared_memory_region": "r"}}
                ]
            },
            [],
            "input 'x': shared memory is not supported; send the data in the body",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP8", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
            [],
            "input 'x': unknown datatype 'FP8'; expected one of " + ", ".join(DATATYPES),
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -4], "data": [1]}]},
            [],
            "input 'x': 'shape' must be a list of non-negative integers, got [1, -4]",
        ),
        ({"inputs": [{"datatype": "FP32", "shape": [1, 4], "data": [1]}]}, [], "inputs[0] needs a string 'name'"),
        ({"inputs": ["x"]}, [], "inputs[0] must be an object, got str"),
        ({"inputs": {"name": "x"}}, [], "'inputs' must be a list of tensors, got dict"),
        ({"id": 5, "inputs": []}, [], "'id' must be a string, got 5"),
        (
            {"inputs": [], "parameters": {"timeout": [1]}},
            [],
            "request: parameter 'timeout' must be a boolean, number or string, got [1]",
        ),
        ({"inputs": [], "parameters": []}, [], "request: 'parameters' must be an object, got list"),
        (
            {"inputs": [], "outputs": [{"name": "out", "parameters": {"classification": 3}}]},
            [],
            "output 'out': parameter 'classification' is not supported",
        ),
        (
            {"inputs": [], "outputs": [{"name": "out", "parameters": {"binary_data": 1}}]},
            [],
            "output 'out': 'binary_data' must be true or false, got 1",
        ),
        (
            {"inputs": [], "outputs": [{"nom": "out"}]},
            [],
            "outputs[0] must be an object with a string 'name', got {'nom': 'out'}",
        ),
        ({"inputs": [], "outputs": {}}, [], "'outputs' must be a list, got dict"),
    ],
)
def test_malformed_http_requests_are_described(document: dict[str, Any], chunks: list[bytes], message: str) -> None:
    assert http_error(document, *chunks, inputs=X4, outputs=[spec("out", "FP32", (1,))]) == message


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"timeout": -1}, "parameter 'timeout': expected a non-negative integer (microseconds), got -1"),
        ({"timeout": 1.5}, "parameter 'timeout': expected a non-negative integer (microseconds), got 1.5"),
        ({"binary_data_output": "yes"}, "parameter 'binary_data_output': expected true or false, got 'yes'"),
    ],
)
def test_badly_typed_request_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    document = {
        "parameters": parameters,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}],
    }
    assert http_error(document, inputs=X4) == message


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{not json", None, "malformed JSON in the request: "),
        (b"\xff\xfe", None, "malformed JSON in the request: "),
        (b"[1, 2]", None, "the request must be a JSON object, got list"),
        (b"{}", "x", f"{HEADER_LENGTH} must be an integer, got 'x'"),
        (b"{}", 10, f"{HEADER_LENGTH} is 10 but the body has 2 bytes"),
    ],
)
def test_malformed_bodies_are_input_errors(body: bytes, length: Any, message: str) -> None:
    with pytest.raises(InputError) as caught:
        http_codec.decode_request(body, length, inputs=X4, outputs=[])
    assert str(caught.value).startswith(message)


def test_header_length_may_come_as_the_header_string() -> None:
    request = InferRequest((f32("x", 1, 4),))
    body, length = http_codec.encode_request(request)
    decoded = http_codec.decode_request(body, str(length), inputs=X4, outputs=[])
    assert decoded.inputs[0].shape == (1, 4)


def test_grpc_specific_faults_are_described() -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import service_pb2

    def fails(message: Any, inputs: list[TensorSpec] = X4) -> str:
        with pytest.raises(InputError) as caught:
            grpc_codec.decode_request(message, inputs=inputs, outputs=[])
        return str(caught.value)

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    m.raw_input_contents.append(b"\x00" * 12)
    assert fails(m) == "input 'x': raw_input_contents holds 12 bytes but 16 bytes are needed for FP32 [2, 2]"

    m.inputs.add(name="y", datatype="FP32", shape=[2, 2])
    assert fails(m) == "raw_input_contents has 1 entries for 2 inputs: give every input raw, or none"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP16", shape=[1, 4])
    assert fails(m) == "input 'x': FP16 has no typed contents field; send it in raw contents"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="INT8", shape=[1, 4]).contents.int_contents.extend([1, 2, 3, 200])
    assert fails(m) == "input 'x': value 200 is out of range for INT8 [-128, 127]"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.int_contents.extend([1, 2, 3, 4])
    assert fails(m) == "input 'x': FP32 data goes in contents.fp32_contents, got contents.int_contents"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2])
    assert fails(m) == "input 'x': contents.fp32_contents holds 2 values but FP32 [1, 4] needs 4"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    m.raw_input_contents.append(b"\x00" * 16)
    assert fails(m) == "input 'x': data in both raw_input_contents and contents.fp32_contents"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="BYTES", shape=[1, 1])
    m.raw_input_contents.append(b"\x09\x00\x00\x00ab")
    assert fails(m, [spec("x", "BYTES", (1,))]) == "input 'x': BYTES element 0 claims 9 bytes but only 2 remain"

    m = service_pb2.ModelInferRequest()
    m.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
    m.outputs.add(name="out").parameters["classification"].int64_param = 2
    assert fails(m) == "output 'out': parameter 'classification' is not supported"


# ---------------------------------------------------------------------------------------------
# Batch split and stack


def test_a_batch_of_n_becomes_n_items_under_the_specs_keys() -> None:
    inputs = [
        spec("IMG", "BYTES", (1,), key="data"),
        spec("x", "FP32", (2,)),
        spec("s", "INT64", ()),
        spec("tags", "BYTES", (-1,)),
    ]
    tensors = [
        Tensor("IMG", "BYTES", np.array([[b"\xff\xd8jpeg0"], [b"\xff\xd8jpeg1"]], dtype=object)),
        Tensor("x", "FP32", np.array([[1, 2], [3, 4]], dtype=np.float32)),
        Tensor("s", "INT64", np.array([7, 8], dtype=np.int64)),
        Tensor("tags", "BYTES", np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object)),
    ]
    items = split_batch(tensors, inputs)
    assert len(items) == 2
    assert items[0]["data"] == b"\xff\xd8jpeg0" and type(items[1]["data"]) is bytes
    assert items[1]["x"].tolist() == [3, 4] and items[1]["x"].dtype == np.float32
    assert items[0]["s"].shape == () and int(items[0]["s"]) == 7
    assert items[1]["tags"].tolist() == [b"c", b"d"]
    items[0]["x"] += 1  # per-item arrays are writable views of the decoded tensor
    assert items[0]["x"].tolist() == [2, 3]


def test_decoded_requests_split_into_writable_items() -> None:
    request = InferRequest((Tensor("x", "FP32", np.ones((3, 4), np.float32)),))
    body, length = http_codec.encode_request(request)
    items = split_batch(http_codec.decode_request(body, length, inputs=X4, outputs=[]).inputs, X4)
    items[2]["x"] *= 3
    assert [item["x"].tolist() for item in items] == [[1.0] * 4, [1.0] * 4, [3.0] * 4]


def test_items_stack_back_into_output_tensors_in_declared_order() -> None:
    outputs = [
        spec("probs", "FP32", (3,), key="result"),
        spec("score", "FP64", (1,)),
        spec("label", "INT32", ()),
        spec("text", "BYTES", (1,)),
        spec("lines", "BYTES", (-1,), as_json=True),
        spec("tokens", "BYTES", (2,)),
    ]
    items = [
        {
            "result": np.array([0.1, 0.2, 0.7]),
            "score": 0.5,
            "label": np.int64(3),
            "text": "h\u00e9",
            "lines": [{"box": np.array([1, 2]), "score": np.float32(0.5)}],
            "tokens": ["a", b"b"],
        },
        {
            "result": [1, 2, 3],
            "score": np.float64(1.5),
            "label": 4,
            "text": b"\x00\xff",
            "lines": [],
            "tokens": np.array([b"c", b"d"], dtype=object),
        },
    ]
    probs, score, label, text, lines, tokens = stack_outputs(items, outputs)
    assert probs.datatype == "FP32" and probs.data.dtype == np.float32
    np.testing.assert_allclose(probs.data, np.array([[0.1, 0.2, 0.7], [1, 2, 3]]), rtol=1e-6)
    assert score.shape == (2, 1) and score.data.tolist() == [[0.5], [1.5]]
    assert label.shape == (2,) and label.data.tolist() == [3, 4]
    assert text.data.tolist() == [["h\u00e9".encode()], [b"\x00\xff"]]
    assert lines.shape == (2, 1)
    assert [json.loads(v) for v in lines.data.reshape(-1)] == [[{"box": [1, 2], "score": 0.5}], []]
    assert tokens.data.tolist() == [[b"a", b"b"], [b"c", b"d"]]
    assert stack_outputs([], outputs)[0].shape == (0, 3)


@pytest.mark.parametrize(
    ("outputs", "items", "message"),
    [
        (
            [spec("probs", "FP32", (3,), key="result")],
            [{"result": [1, 2, 3]}, {"data": 1}],
            "output 'probs': item 1 has no key 'result' (its keys: ['data'])",
        ),
        ([spec("probs", "FP32", (3,))], [{"probs": [1, 2]}], "output 'probs': item 0 has shape [2], declared [3]"),
        (
            [spec("boxes", "INT32", (-1, 4))],
            [{"boxes": np.zeros((2, 4), int)}, {"boxes": np.zeros((3, 4), int)}],
            "output 'boxes': item 1 has shape [3, 4] but item 0 has [2, 4]; outputs are stacked along the batch "
            "dimension, so per-item shapes must agree (declare it json = true for values that vary per item)",
        ),
        ([spec("n", "INT32", (1,))], [{"n": 2.5}], "output 'n': item 0: INT32 needs integers, got floats"),
        (
            [spec("j", "BYTES", (1,), as_json=True)],
            [{"j": {1, 2}}],
            "output 'j': item 0 is not JSON-serialisable: set is not JSON-serialisable",
        ),
        (
            [spec("t", "BYTES", (1,))],
            [{"t": 5}],
            "output 't': item 0: BYTES needs bytes or strings, got int at element 0",
        ),
    ],
)
def test_outputs_that_do_not_fit_are_contract_errors(
    outputs: list[TensorSpec], items: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ContractError) as caught:
        stack_outputs(items, outputs)
    assert str(caught.value) == message


def test_json_inputs_reach_items_as_values() -> None:
    inputs = [spec("q", "BYTES", (-1,), key="data", as_json=True)]
    request = InferRequest((Tensor("q", "BYTES", np.array([[b'{"k": [1, 2]}'], [b"3"]], dtype=object)),))
    body, length = http_codec.encode_request(request)
    decoded = http_codec.decode_request(body, length, inputs=inputs, outputs=[])
    assert split_batch(decoded.inputs, inputs) == [{"data": {"k": [1, 2]}}, {"data": 3}]

    bad = (Tensor("q", "BYTES", np.array([[b"{"]], dtype=object)),)
    with pytest.raises(InputError, match="input 'q': item 0 is not a JSON document: "):
        split_batch(bad, inputs)
    wide = InferRequest((Tensor("q", "BYTES", np.array([[b"1", b"2"]], dtype=object)),))
    body, length = http_codec.encode_request(wide)
    with pytest.raises(InputError) as caught:
        http_codec.decode_request(body, length, inputs=inputs, outputs=[])
    assert str(caught.value) == (
        "input 'q': a JSON input holds one document per item, so expected shape [-1, 1], got [1, 2]"
    )


def test_a_json_output_must_hold_one_element_per_item() -> None:
    bad = [spec("j", "BYTES", (2,), as_json=True)]
    with pytest.raises(ConfigError, match=r"tensor 'j' has json = true and shape \[2\]"):
        check_signature([], bad)
    with pytest.raises(ConfigError, match="declare its shape"):
        stack_outputs([{"j": 1}], bad)
    with pytest.raises(ConfigError, match=r"tensor 'q' has json = true and shape \[3\]"):
        check_signature([spec("q", "BYTES", (3,), as_json=True)], [])
    check_signature(X4, [spec("j", "BYTES", (-1,), as_json=True), spec("k", "BYTES", (), as_json=True)])


# ---------------------------------------------------------------------------------------------
# Responses: requested outputs, binary or JSON


def _response() -> InferResponse:
    return InferResponse(
        "m",
        (
            Tensor("a", "FP32", np.array([[1.5], [2.5]], np.float32)),
            Tensor("b", "INT64", np.array([[1], [2]], np.int64)),
            Tensor("c", "BYTES", np.array([[b"ok"], [b"\xff"]], dtype=object)),
        ),
        id="q",
    )


def _forms(body: bytes, length: int | None) -> dict[str, str]:
    header = json.loads(body[: length or len(body)])
    return {o["name"]: ("binary" if "parameters" in o else "json") for o in header["outputs"]}


def test_only_requested_outputs_are_sent_in_the_requested_form() -> None:
    request = InferRequest((), outputs=(RequestedOutput("b", binary=True), RequestedOutput("a")))
    body, length = http_codec.encode_response(_response(), request)
    assert list(_forms(body, length).items()) == [("b", "binary"), ("a", "json")]
    back = http_codec.decode_response(body, length)
    assert [t.name for t in back.outputs] == ["b", "a"]
    assert back.outputs[1].data.tolist() == [[1.5], [2.5]]


def test_binary_data_output_sets_the_default_form() -> None:
    everything = InferRequest((), parameters={"binary_data_output": True})
    body, length = http_codec.encode_response(_response(), everything)
    assert _forms(body, length) == {"a": "binary", "b": "binary", "c": "binary"}
    some = InferRequest(
        (), outputs=(RequestedOutput("a", binary=False), RequestedOutput("b")), parameters={"binary_data_output": True}
    )
    body, length = http_codec.encode_response(_response(), some)
    assert _forms(body, length) == {"a": "json", "b": "binary"}


def test_json_is_the_default_and_invalid_utf8_bytes_go_binary_regardless() -> None:
    body, length = http_codec.encode_response(_response())
    assert _forms(body, length) == {"a": "json", "b": "json", "c": "binary"}
    header = json.loads(body[:length])
    assert header["id"] == "q" and header["model_version"] == "1"
    assert http_codec.decode_response(body, length).outputs[2].data.tolist() == [[b"ok"], [b"\xff"]]
    only_b = InferRequest((), outputs=(RequestedOutput("b"),))
    body, length = http_codec.encode_response(_response(), only_b)
    assert length is None
    assert json.loads(body)["outputs"] == [{"name": "b", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]}]


def test_grpc_responses_carry_only_the_requested_outputs() -> None:
    pytest.importorskip("tritonclient.grpc")
    request = InferRequest((), outputs=(RequestedOutput("c"),))
    message = grpc_codec.encode_response(_response(), request)
    assert [o.name for o in message.outputs] == ["c"]
    assert len(message.raw_output_contents) == 1


def test_error_body_is_the_protocols() -> None:
    assert json.loads(error_body("input 'x': bad \u00e9")) == {"error": "input 'x': bad \u00e9"}
    with pytest.raises(InputError, match="the server answered with an error: boom"):
        http_codec.decode_response(error_body("boom"), None)


# ---------------------------------------------------------------------------------------------
# The fast path (NOTE [fast path]): the same results as the general code, faults worded by it


def _same_request(fast: InferRequest, general: InferRequest) -> None:
    assert (fast.id, fast.outputs, fast.parameters) == (general.id, general.outputs, general.parameters)
    assert [t.name for t in fast.inputs] == [t.name for t in general.inputs]
    for tensor, expected in zip(fast.inputs, general.inputs, strict=True):
        assert_same(tensor, expected.data)
        assert tensor.data.flags.writeable and tensor.data.dtype == expected.data.dtype


def _decode_both(
    monkeypatch: pytest.MonkeyPatch, body: bytes, length: int | None, inputs: tuple[TensorSpec, ...], outputs: Any = ()
) -> tuple[InferRequest, InferRequest, int]:
    """Decode ``body`` as a server does, then by the general path alone; and how often the general path ran."""
    calls = []
    general = http_codec.check_request

    def counting(*args: Any) -> InferRequest:
        calls.append(1)
        return general(*args)

    monkeypatch.setattr(http_codec, "check_request", counting)
    fast = http_codec.decode_request(body, length, inputs=inputs, outputs=outputs)
    fast_calls = len(calls)
    monkeypatch.setattr(http_codec, "_decode_fast", lambda *args: None)
    return fast, http_codec.decode_request(body, length, inputs=inputs, outputs=outputs), fast_calls


@pytest.mark.parametrize("datatype", JSON_TYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("form", ["binary", "flat", "nested"])
def test_usual_requests_take_the_fast_path_to_the_same_request(
    monkeypatch: pytest.MonkeyPatch, datatype: str, batch: int, form: str
) -> None:
    data = sample(datatype, (batch, 3))
    request = InferRequest(
        (Tensor("t", datatype, data), Tensor("s", "FP32", np.arange(batch, dtype=np.float32).reshape(batch, 1))),
        id="r",
        outputs=(RequestedOutput("out", True),),
        parameters={"timeout": 9, "binary_data_output": True},
    )
    body, length = http_codec.encode_request(request, binary=form == "binary")
    if form == "nested":
        document = json.loads(body)
        document["inputs"][0]["data"] = np.array(document["inputs"][0]["data"], dtype=object).reshape(batch, 3).tolist()
        body, length = body_of(document)
    inputs = (spec("s", "FP32", (1,)), spec("t", datatype, (3,)))  # declared in another order
    fast, general, general_calls = _decode_both(monkeypatch, body, length, inputs, (spec("out", "FP32", (1,)),))
    # numpy reads [0, 2**64 - 1] as floats, and strings are read flat: those go the general way.
    unusual = (datatype == "UINT64" and form != "binary") or (datatype == "BYTES" and form == "nested")
    assert general_calls == (1 if unusual else 0)
    assert [t.name for t in fast.inputs] == ["s", "t"]
    _same_request(fast, general)


@pytest.mark.parametrize(
    ("entry", "declared"),
    [
        ({"datatype": "INT32", "shape": [2, 3], "data": [[1, 2], [3, 4], [5, 6]]}, (3,)),  # another nesting
        ({"datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3, 4], [5], [6]]}, (3,)),  # ragged
        ({"datatype": "UINT64", "shape": [1, 2], "data": [0, 2**64 - 1]}, (2,)),  # beyond int64
        ({"datatype": "FP32", "shape": [1, 0], "data": []}, (-1,)),  # no elements
        ({"datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["\u00e9"]]}, (1,)),  # nested strings
        ({"datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4], "parameters": {"p": "custom"}}, (-1,)),
    ],
)
def test_unusual_valid_requests_decode_the_same_either_way(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], declared: tuple[int, ...]
) -> None:
    body, length = body_of({"inputs": [{"name": "x", **entry}]})
    fast, general, _ = _decode_both(monkeypatch, body, length, (spec("x", entry["datatype"], declared),))
    _same_request(fast, general)


@pytest.mark.parametrize(
    "body",
    [
        b' {"inputs": []} ',
        b'{"inputs": []}\n',
        b"\xef\xbb\xbf" + b'{"inputs": []}',
        '{"inputs": []}'.encode("utf-16-le"),
        '{"inputs": [], "id": "\u00e9"}'.encode(),
    ],
    ids=["spaces", "newline", "utf8-bom", "utf16", "non-ascii"],
)
def test_bodies_are_read_as_json_loads_reads_them(body: bytes) -> None:
    with pytest.raises(InputError, match="the request has no inputs"):
        http_codec.decode_request(body, None, inputs=(), outputs=())
    with pytest.raises(InputError, match="malformed JSON in the request: Extra data"):
        http_codec.decode_request(b'{"inputs": []} {}', None, inputs=(), outputs=())


def test_responses_are_written_as_json_dumps_writes_them() -> None:
    tensors = (
        Tensor("a\u00e9", "FP32", np.array([[1.5, np.nan], [np.inf, -0.0]], np.float32)),
        Tensor("b", "BOOL", np.array([True, False])),
        Tensor("c", "BYTES", np.array([['\u00e9"'.encode()]], dtype=object)),
        Tensor("d", "INT8", np.zeros((1, 0, 2), np.int8)),
    )
    response = InferResponse("m\u00e9", tensors, model_version="2", id='q"', parameters={"p": 0.5, "s": "\u00e9"})
    body, length = http_codec.encode_response(response)
    entries = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": t.data.reshape(-1).tolist()}
        for t in tensors
    ]
    entries[2]["data"] = ['\u00e9"']
    document = {"model_name": "m\u00e9", "model_version": "2", "id": 'q"', "parameters": response.parameters}
    assert (body, length) == (json.dumps({**document, "outputs": entries}, separators=(",", ":")).encode(), None)


def test_one_item_outputs_own_their_memory_as_stacked_ones_do() -> None:
    value = np.array([0.5, 1.5], np.float32)
    (single,) = stack_outputs([{"x": value}], (spec("x", "FP32", (2,)),))
    (double,) = stack_outputs([{"x": value}, {"x": value}], (spec("x", "FP32", (2,)),))
    assert single.data.tolist() == [[0.5, 1.5]] and double.data.tolist() == [[0.5, 1.5]] * 2
    for tensor in (single, double):
        assert not np.shares_memory(tensor.data, value) and tensor.data.flags.c_contiguous


def test_messages_stay_frozen_value_objects() -> None:
    request = InferRequest((f32("x", 1, 4),), id="a")
    assert request.parameters == {} and request.parameters is not InferRequest(()).parameters
    assert replace(request, id="b").id == "b" and replace(request, id="b").inputs == request.inputs
    response = InferResponse("m", ())
    assert response == InferResponse("m", (), model_version="1", id="", parameters={})
    for message, field in ((request, "id"), (response, "id"), (request.inputs[0], "name")):
        with pytest.raises(FrozenInstanceError):
            setattr(message, field, "z")


# ---------------------------------------------------------------------------------------------
# Compatibility with tritonclient.http


@pytest.mark.parametrize("datatype", JSON_TYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_requests_decode(datatype: str, binary: bool) -> None:
    th = pytest.importorskip("tritonclient.http")
    data = sample(datatype)
    infer_input = th.InferInput("t", list(data.shape), datatype)
    infer_input.set_data_from_numpy(data, binary_data=binary)
    outputs = [th.InferRequestedOutput("out", binary_data=False)]
    body, length = th.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs, request_id="abc", timeout=2_000_000, parameters={"k": 3}
    )
    request = http_codec.decode_request(
        body, length, inputs=[spec("t", datatype, (3,))], outputs=[spec("out", "FP32", (1,))]
    )
    assert_same(request.inputs[0], data)
    assert request.id == "abc"
    assert request.timeout_s == 2.0
    assert request.parameters["k"] == 3
    assert request.outputs == (RequestedOutput("out", False),)


def test_tritonclient_http_bf16_requests_decode() -> None:
    th = pytest.importorskip("tritonclient.http")
    if not has_bf16():
        pytest.skip("no bfloat16 type")
    data = sample("BF16")
    infer_input = th.InferInput("t", list(data.shape), "BF16")
    infer_input.set_data_from_numpy(data)
    body, length = th.InferenceServerClient.generate_request_body([infer_input])
    request = http_codec.decode_request(body, length, inputs=[spec("t", "BF16", (3,))], outputs=[])
    assert request.parameters == {"binary_data_output": True}  # the client asks so when it names no outputs
    assert_same(request.inputs[0], data)


@pytest.mark.parametrize("datatype", ALL_TYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_parses_our_responses(datatype: str, binary: bool) -> None:
    th = pytest.importorskip("tritonclient.http")
    data = sample(datatype)
    response = InferResponse("m", (Tensor("t", datatype, data), Tensor("u", "INT32", np.arange(2, dtype=np.int32))))
    request = InferRequest((), outputs=(RequestedOutput("t", binary), RequestedOutput("u", not binary)))
    body, length = http_codec.encode_response(response, request)
    result = th.InferenceServerClient.parse_response_body(body, header_length=length)
    got = result.as_numpy("t")
    assert got.shape == data.shape
    if datatype == "BYTES" and not binary:  # JSON strings come back as str
        assert got.tolist() == [[v.decode() for v in row] for row in data.tolist()]
    else:
        assert got.tolist() == data.tolist()
    assert result.as_numpy("u").tolist() == [0, 1]
    assert result.get_response()["model_name"] == "m"


# ---------------------------------------------------------------------------------------------
# Compatibility with tritonclient.grpc


@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_tritonclient_grpc_requests_decode(datatype: str) -> None:
    tg = pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import _utils

    data = sample(datatype)
    infer_input = tg.InferInput("t", list(data.shape), datatype)
    infer_input.set_data_from_numpy(data)
    message = _utils._get_inference_request(
        model_name="m",
        inputs=[infer_input],
        model_version="1",
        request_id="id9",
        outputs=[tg.InferRequestedOutput("out")],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=500,
        parameters={"custom": 1.5},
    )
    request = grpc_codec.decode_request(
        message, inputs=[spec("t", datatype, (3,))], outputs=[spec("out", "FP32", (1,))]
    )
    assert (request.model_name, request.model_version, request.id) == ("m", "1", "id9")
    assert request.parameters == {"timeout": 500, "custom": 1.5}
    assert request.outputs == (RequestedOutput("out"),)
    assert_same(request.inputs[0], data)


@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_tritonclient_grpc_parses_our_responses(datatype: str) -> None:
    tg = pytest.importorskip("tritonclient.grpc")
    data = sample(datatype)
    message = grpc_codec.encode_response(InferResponse("m", (Tensor("t", datatype, data),), id="x"))
    result = tg.InferResult(message)
    assert result.as_numpy("t").tolist() == data.tolist()
    assert result.get_response().id == "x"


# ---------------------------------------------------------------------------------------------
# Metadata, configuration, statistics


MODEL = ModelDescription(
    "ocr",
    inputs=(spec("IMG", "BYTES", (1,), key="data"), spec("x", "FP32", (3, -1)), spec("s", "INT32", ())),
    outputs=(spec("TEXT", "BYTES", (-1,), key="result", as_json=True),),
    max_batch_size=8,
    preferred_batch_sizes=(4, 8),
    max_queue_delay_us=5000,
    instance_count=2,
)


def test_model_metadata_puts_the_batch_dimension_first() -> None:
    assert model_metadata(MODEL) == {
        "name": "ocr",
        "versions": ["1"],
        "platform": "pipeserve",
        "inputs": [
            {"name": "IMG", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "x", "datatype": "FP32", "shape": [-1, 3, -1]},
            {"name": "s", "datatype": "INT32", "shape": [-1]},
        ],
        "outputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, -1]}],
    }
    unbatched = ModelDescription("m", inputs=(spec("x", "FP32", (4,)),), outputs=())
    assert model_metadata(unbatched)["inputs"][0]["shape"] == [4]


def test_model_config_is_tritons() -> None:
    config = model_config(MODEL)
    assert config["max_batch_size"] == 8
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("IMG", "TYPE_STRING", [1]),
        ("x", "TYPE_FP32", [3, -1]),
        ("s", "TYPE_INT32", [1]),
    ]
    assert config["input"][2]["reshape"] == {"shape": []}
    assert config["output"][0]["data_type"] == "TYPE_STRING"
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    assert config["instance_group"] == [{"name": "ocr_0", "kind": "KIND_CPU", "count": 2, "gpus": []}]
    assert "dynamic_batching" not in model_config(ModelDescription("m", inputs=(), outputs=()))
    with pytest.raises(ConfigError, match="expected at least one instance, got 0"):
        ModelDescription("m", inputs=(), outputs=(), instance_count=0)


def test_metadata_and_config_as_grpc_messages() -> None:
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import json_format

    from pipeserve.oip import model_config_message, model_metadata_message

    metadata = model_metadata_message(MODEL)
    assert list(metadata.inputs[1].shape) == [-1, 3, -1]
    assert metadata.versions == ["1"]
    config = model_config_message(MODEL).config
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].count == 2
    as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
    assert as_dict["input"][0]["data_type"] == "TYPE_STRING"


def test_statistics_are_tritons() -> None:
    counters = ModelCounters(
        "ocr",
        success=Duration(10, 5_000),
        fail=Duration(1, 100),
        queue=Duration(11, 700),
        compute=Duration(4, 3_000),
        inference_count=10,
        execution_count=4,
        last_inference_ms=1_700_000_000_000,
        batches={4: Duration(2, 2_000), 1: Duration(2, 1_000)},
    )
    stats = model_statistics([counters])["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert (entry["name"], entry["version"], entry["last_inference"]) == ("ocr", "1", 1_700_000_000_000)
    assert (entry["inference_count"], entry["execution_count"]) == (10, 4)
    assert entry["inference_stats"]["success"] == {"count": 10, "ns": 5_000}
    assert entry["inference_stats"]["compute_infer"] == {"count": 4, "ns": 3_000}
    assert entry["inference_stats"]["compute_input"] == {"count": 4, "ns": 0}
    assert [b["batch_size"] for b in entry["batch_stats"]] == [1, 4]
    assert entry["batch_stats"][1]["compute_infer"] == {"count": 2, "ns": 2_000}


def test_statistics_as_a_grpc_message() -> None:
    pytest.importorskip("tritonclient.grpc")
    from pipeserve.oip import model_statistics_message

    message = model_statistics_message(
        [ModelCounters("a", queue=Duration(3, 30), batches={2: Duration(1, 9)}), ModelCounters("b")]
    )
    assert [s.name for s in message.model_stats] == ["a", "b"]
    assert message.model_stats[0].inference_stats.queue.ns == 30
    assert message.model_stats[0].batch_stats[0].compute_infer.count == 1


# ---------------------------------------------------------------------------------------------
# Layering


def test_pipeserve_does_not_import_oip_and_oip_loads_grpc_stubs_lazily() -> None:
    code = (
        "import sys\n"
        "import pipeserve\n"
        "assert 'pipeserve.oip' not in sys.modules\n"
        "import pipeserve.oip\n"
        "print(sorted(m for m in ('tritonclient', 'grpc', 'google.protobuf') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_tritonclient_is_a_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.service_pb2", None)
    with pytest.raises(MissingDependencyError, match=r"install pipeserve\[serve\]"):
        grpc_codec.encode_response(_response())
