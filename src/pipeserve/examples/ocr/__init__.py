"""PP-OCR as a pipeserve pipeline: ``pipeline()`` builds it; ``config()`` gives its configuration.

    from pipeserve.examples import ocr
    with ocr.pipeline() as pipe:
        item = pipe({"data": jpeg_bytes})
        item["result"]   # [{"box": [[x, y] x 4], "text": str, "score": float}, ...]

Needs ``pipeserve[ocr]`` (rapidocr-onnxruntime, whose wheel carries the three ONNX models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeserve

__all__ = ["CONFIG", "config", "models_folder", "pipeline"]

CONFIG = Path(__file__).with_name("ocr.toml")


def models_folder() -> Path:
    """Where rapidocr-onnxruntime keeps its models."""
    try:
        import rapidocr_onnxruntime
    except ImportError as exc:
        raise pipeserve.MissingDependencyError(
            "the OCR example needs rapidocr-onnxruntime: pip install 'pipeserve[ocr]'"
        ) from exc
    return Path(rapidocr_onnxruntime.__file__).parent / "models"


def config(**overrides: Any) -> dict[str, Any]:
    """The pipeline's configuration as a dict, with model paths filled in.

    ``overrides`` maps ``"node.key"`` to a value, e.g. ``{"rec.instance_num": 2}``.
    """
    import tomllib

    with CONFIG.open("rb") as handle:
        raw = tomllib.load(handle)
    folder = str(models_folder())
    for value in raw.values():
        if isinstance(value, dict) and isinstance(value.get("model"), str):
            value["model"] = value["model"].replace("{models}", folder)
    for dotted, value in overrides.items():
        node, key = dotted.split(".", 1)
        raw[node][key] = value
    return raw


def pipeline(**overrides: Any) -> pipeserve.Pipe:
    """Build the OCR pipe (see :func:`config` for ``overrides``)."""
    return pipeserve.pipe(config(**overrides))
