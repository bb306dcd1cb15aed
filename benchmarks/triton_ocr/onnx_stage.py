"""Triton Python-backend model: one of RapidOCR's ONNX networks (det, cls or rec). The benchmark
copies this one file in as ``1/model.py`` of each of the three model folders.

The network is the ``onnx_file`` parameter of config.pbtxt, from the models/ folder of the
rapidocr_onnxruntime wheel, opened with RapidOCR's own session class (its session options) and
``intra_op_threads`` threads. The requests of one dynamic batch are concatenated and run together,
one run per input shape, and the output rows are handed back to each request.
"""

import json
from pathlib import Path

import numpy as np
import rapidocr_onnxruntime
import triton_python_backend_utils as pb_utils
from rapidocr_onnxruntime.utils import OrtInferSession


def _parameter(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        model = Path(rapidocr_onnxruntime.__file__).parent / "models" / _parameter(config, "onnx_file", "")
        threads = int(_parameter(config, "intra_op_threads", "1"))
        self.session = OrtInferSession(
            {"model_path": str(model), "intra_op_num_threads": threads, "inter_op_num_threads": 1}
        )
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        by_shape = {}
        for index, array in enumerate(arrays):
            by_shape.setdefault(array.shape[1:], []).append(index)
        responses = [None] * len(requests)
        for indices in by_shape.values():
            try:
                batch = np.concatenate([arrays[i] for i in indices]) if len(indices) > 1 else arrays[indices[0]]
                result = self.session(batch)[0]
            except Exception as exc:  # noqa: BLE001 - the clients get the error, the instance goes on
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in indices:
                rows = np.ascontiguousarray(result[start : start + len(arrays[i])])
                start += len(arrays[i])
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, rows)])
        return responses
