"""What the handlers of both transports share: the models, readiness, and the server's options."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .repository import Repository

__all__ = ["ServerState"]


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
        """Ready to serve: started, not draining, no model loading, and at least one model."""
        return (
            self.started and not self.draining and not self.repository.loading and bool(self.repository.ready_models())
        )

    async def load(self, name: str, config: Mapping[str, Any] | None) -> None:
        """Load (or reload) a model without blocking the event loop."""
        await asyncio.to_thread(self.repository.load, name, config)

    async def unload(self, name: str) -> None:
        """Unload a model without blocking the event loop (its pipe drains meanwhile)."""
        await asyncio.to_thread(self.repository.unload, name)
