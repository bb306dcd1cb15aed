"""pipeserve's network front: the Open Inference Protocol (KServe v2, as Triton speaks it) over
HTTP/REST and gRPC, so that Triton's clients (``tritonclient``, ``perf_analyzer``) work unchanged.

::

    from pipeserve.server import Server
    with Server(["classifier.toml", "ocr"], port=8000, grpc_port=8001) as server:
        ...                                  # serving on 127.0.0.1 until the block ends

    pipeserve serve classifier.toml ocr      # the same from the command line

:func:`app` gives the ASGI application alone, to mount in another ASGI server. Needs
``pipeserve[serve]``. See docs/serving.md for the protocol mapping, errors and shutdown.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import BodyTooLarge, ModelNotFound, ModelNotReady, Status, Unsupported, status_of
from .http import HttpApp
from .repository import ModelState, Repository, model_sources
from .runner import Server
from .state import ServerState

__all__ = [
    "BodyTooLarge",
    "HttpApp",
    "ModelNotFound",
    "ModelNotReady",
    "ModelState",
    "Repository",
    "Server",
    "ServerState",
    "Status",
    "Unsupported",
    "app",
    "model_sources",
    "status_of",
]


def app(
    sources: Sequence[str],
    *,
    timeout: float | None = None,
    access_log: bool = False,
    cpu_count: int | None = None,
    max_body: int = 64 * 1024 * 1024,
    metrics: bool | None = None,
) -> HttpApp:
    """Load the models of ``sources`` and return the ASGI application serving them over HTTP.

    The caller owns the models: close them with ``app.state.repository.close(timeout)``.

    Raises:
        PipeServeError: a model failed to load.
    """
    repository = Repository(sources, cpu_count=cpu_count)
    repository.load_all()
    state = ServerState(repository, timeout=timeout, access_log=access_log)
    state.started = True
    return HttpApp(state, max_body=max_body, metrics=metrics)
