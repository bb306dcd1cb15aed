"""What the handlers of both transports share: the models, readiness, and the server's options."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from .. import InputError, PipeClosed, TraceOption, oip
from .model import ServedModel, Submitted
from .repository import Repository

__all__ = ["ServerState", "config_parameter"]


def config_parameter(value: Any) -> dict[str, Any] | None:
    """The ``config`` parameter of a load request, over either transport: a pipe configuration
    as JSON text (an HTTP body may also hold the object itself), or None when absent.

    Raises:
        InputError: not JSON, or not an object.
    """
    if value is None:
        return None
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise InputError(f"the 'config' parameter is not JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise InputError("the 'config' parameter must be a JSON object (a pipe configuration)")
    return loaded


class ServerState:
    """A server's shared state.

    Args:
        repository: its models.
        timeout: the default request deadline in seconds (None: the pipes' own).
        access_log: log one line per request (id, model, status, latency) to ``pipeserve.access``.

    Attributes:
        live: the process serves (false only once it is stopping for good).
        draining: shutdown has begun: readiness is false, in-flight requests finish.
    """

    def __init__(self, repository: Repository, *, timeout: float | None = None, access_log: bool = False) -> None:
        self.repository = repository
        self.timeout = timeout
        self.access_log = access_log
        self.live = True
        self.draining = False
        self.started = False

    @property
    def ready(self) -> bool:
        """Ready to serve: started, not draining, no model loading, at least one model, and every
        model's pipe healthy (an instance alive in every node, none broken or stuck)."""
        if not self.started or self.draining or self.repository.loading:
            return False
        models = self.repository.ready_models()
        return bool(models) and all(model.pipe.health().ok for model in models)

    def submit(
        self,
        name: str,
        decode: Callable[[ServedModel], oip.InferRequest],
        timeout: float | None,
        trace: TraceOption = None,
    ) -> tuple[ServedModel, Submitted]:
        """Decode a request for model ``name`` and put its items in the pipe.

        A reload swaps the model between the look-up and the submission at times; the old pipe
        is then draining and refuses new items, so the request goes to the new model instead,
        once (NOTE [model states]).

        Raises:
            ModelNotFound, ModelNotReady, InputError, and what the pipe refuses with.
        """
        model = self.repository.get(name)
        timeout = self.timeout if timeout is None else timeout
        try:
            return model, model.submit(decode(model), timeout, trace)
        except PipeClosed:
            current = self.repository.get(name)
            if current is model:
                raise
        return current, current.submit(decode(current), timeout, trace)

    async def load(self, name: str, config: Mapping[str, Any] | None) -> None:
        """Load (or reload) a model without blocking the event loop."""
        await asyncio.to_thread(self.repository.load, name, config)

    async def unload(self, name: str) -> None:
        """Unload a model without blocking the event loop (its pipe drains meanwhile)."""
        await asyncio.to_thread(self.repository.unload, name)
