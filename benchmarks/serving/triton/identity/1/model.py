"""Triton Python-backend model for benchmarks/serving.py: OUTPUT0 is INPUT0, per request."""

from typing import Any

import triton_python_backend_utils as pb_utils  # provided by Triton's Python-backend stub


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", values)]))
        return responses
