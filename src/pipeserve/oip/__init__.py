"""The Open Inference Protocol (KServe v2, as Triton speaks it): items <-> tensors <-> wire.

Pure code shared by the HTTP and gRPC servers, the remote backend and the Ray ingress. It
needs numpy; gRPC messages also need ``tritonclient[grpc]`` (both come with
``pipeserve[serve]``). ``import pipeserve`` never imports this package.

A request's path through it, on a server::

    from pipeserve import oip

    request = oip.http_codec.decode_request(body, headers.get(oip.HEADER_LENGTH), inputs=ins, outputs=outs)
    items = oip.split_batch(request.inputs, ins)            # N item dicts (NOTE [batch mapping])
    ...                                                     # run them through the pipe
    tensors = oip.stack_outputs(items, outs)
    response = oip.InferResponse("ocr", tuple(tensors), id=request.id)
    body, header_length = oip.http_codec.encode_response(response, request)

gRPC is the same with :func:`grpc_codec.decode_request` and :func:`grpc_codec.encode_response`.

Modules, one idea each:

- :mod:`.datatypes`: the type table (numpy dtypes, element sizes, Triton config names).
- :mod:`.tensor`: :class:`Tensor`, the neutral tensor, and lossless value coercion.
- :mod:`.raw`: tensors as raw little-endian bytes (binary extension, gRPC raw contents).
- :mod:`.messages`: :class:`InferRequest`, :class:`InferResponse`, requested outputs.
- :mod:`.validate`: a request against the declared signature, one set of messages for both transports.
- :mod:`.batch`: a batched request to items and the items' results back to tensors.
- :mod:`.http_tensors`, :mod:`.http_codec`: HTTP/JSON bodies with binary data.
- :mod:`.plan`, :mod:`.http_fast`: what a signature means for every request, worked out once,
  and the fast path that a usual, valid request takes (NOTE [fast path]).
- :mod:`.grpc_codec`, :mod:`.stubs`: gRPC messages, the generated modules loaded lazily.
- :mod:`.metadata`, :mod:`.statistics`: model metadata, configuration and statistics.
"""

from __future__ import annotations

from . import grpc_codec, http_codec
from .batch import check_signature, split_batch, stack_outputs
from .datatypes import DATATYPES, DataType, config_name, datatype_from_config, datatype_of, element_size, numpy_dtype
from .http_codec import HEADER_LENGTH, error_body
from .messages import InferRequest, InferResponse, Parameter, RequestedOutput, select_outputs
from .metadata import ModelDescription, model_config, model_config_message, model_metadata, model_metadata_message
from .raw import decode_raw, encode_raw, raw_size
from .statistics import Duration, ModelCounters, model_statistics, model_statistics_message
from .tensor import Tensor, coerce
from .validate import batch_size, check_request

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "DataType",
    "Duration",
    "InferRequest",
    "InferResponse",
    "ModelCounters",
    "ModelDescription",
    "Parameter",
    "RequestedOutput",
    "Tensor",
    "batch_size",
    "check_request",
    "check_signature",
    "coerce",
    "config_name",
    "datatype_from_config",
    "datatype_of",
    "decode_raw",
    "element_size",
    "encode_raw",
    "error_body",
    "grpc_codec",
    "http_codec",
    "model_config",
    "model_config_message",
    "model_metadata",
    "model_metadata_message",
    "model_statistics",
    "model_statistics_message",
    "numpy_dtype",
    "raw_size",
    "select_outputs",
    "split_batch",
    "stack_outputs",
]
