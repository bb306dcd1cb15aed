"""Triton Python-backend model: the OCR service as one RapidOCR engine per model instance.

Input ``IMAGE`` (BYTES, an encoded image per batch row); output ``RESULT`` (BYTES, per row the JSON
list of lines ``{"box": [[x, y] x 4], "text": str, "score": float}``, as ``pipeserve serve ocr``
returns them). Each instance builds its own engine with ``cores / instances`` intra-op threads, so
that the instances together use the machine's cores once. Requests that arrive in one batch are
read one after another.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from rapidocr_onnxruntime import RapidOCR


def _instances(config):
    return sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = max(1, (os.cpu_count() or 1) // _instances(config))
        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def read(self, data):
        result, _ = self.engine(data)
        lines = [
            {"box": [[float(x), float(y)] for x, y in box], "text": text, "score": float(score)}
            for box, text, score in result or []
        ]
        return json.dumps(lines).encode("utf-8")

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            try:
                results = [self.read(bytes(image)) for image in images.reshape(-1)]
            except Exception as exc:  # noqa: BLE001 - the client gets the error, the instance goes on
                error = pb_utils.TritonError(f"OCR failed: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            output = np.array(results, dtype=np.object_).reshape(images.shape)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", output)]))
        return responses
