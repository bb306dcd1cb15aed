"""One served model: a pipe behind the Open Inference Protocol, with Triton's counters.

A model serves its pipe's default entry. Its tensors are the entry's declared ``inputs`` and
``outputs`` (see :mod:`pipeserve.signature`); a pipe that declares none takes one BYTES input
``data`` holding a JSON document per item and returns one BYTES output ``result`` holding the
item's result as JSON, so that any pipeline can be served.

A request with a batch dimension of N becomes N items of the pipe, queued together so that they
batch with everyone else's (NOTE [batch mapping] in :mod:`pipeserve.oip.batch`); the outputs are
stacked back in order.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .. import ConfigError, InputError, Pipe, TensorSpec, TraceOption, oip
from ..metrics import RequestTally, model_counters

__all__ = ["DEFAULT_INPUTS", "DEFAULT_OUTPUTS", "ServedModel", "Submitted"]

DEFAULT_INPUTS = (TensorSpec("data", "BYTES", (1,), "data", json=True),)
DEFAULT_OUTPUTS = (TensorSpec("result", "BYTES", (1,), "result", json=True),)
VERSION = "1"
DEFAULT_MAX_BATCH = 64  # items per request unless the entry node sets max_batch_size


@dataclass
class Submitted:
    """A request whose items are in the pipe.

    Attributes:
        request: the decoded request; items: its items, updated in place by the pipe;
        futures: one per item; start: when it arrived (``perf_counter_ns``).
    """

    request: oip.InferRequest
    items: list[dict[str, Any]]
    futures: list[Future[dict[str, Any]]]
    start: int

    @property
    def done(self) -> bool:
        """Every item has its outcome (always so when the entry ran inline)."""
        return all(future.done() for future in self.futures)


class ServedModel:
    """A loaded model.

    Args:
        name: the model's name.
        pipe: the running pipe that serves it (the model owns it from now on).
        source: where its configuration came from, for messages.

    Raises:
        ConfigError: the declared signature cannot be served.
    """

    def __init__(self, name: str, pipe: Pipe, source: str) -> None:
        self.name = name
        self.pipe = pipe
        self.source = source
        self.entry = pipe.entries[0]
        described = pipe.describe()
        entry = described.entries[self.entry]
        self.inputs = entry.inputs or DEFAULT_INPUTS
        self.outputs = entry.outputs or DEFAULT_OUTPUTS
        oip.check_signature(self.inputs, self.outputs)
        params = pipe.config.nodes[self.entry].params
        high = entry.batch_range[1]
        # Items of one request need not fit one batch (the pipe splits them), so the default
        # lets a request carry more than the entry's ``max``.
        self.max_batch_size = int(params.get("max_batch_size", max(high, DEFAULT_MAX_BATCH)))
        if self.max_batch_size < 1:
            # Requests always carry a batch dimension here; a model taking one item per request
            # says max_batch_size = 1.
            raise ConfigError(
                f"max_batch_size must be at least 1, got {self.max_batch_size} (1: one item per request)",
                node=self.entry,
                key="max_batch_size",
            )
        node = described.nodes.get(self.entry)
        self.description = oip.ModelDescription(
            name=name,
            inputs=self.inputs,
            outputs=self.outputs,
            version=VERSION,
            platform="pipeserve",
            max_batch_size=self.max_batch_size,
            preferred_batch_sizes=(high,),
            max_queue_delay_us=int(1000 * node.batching_timeout_ms) if node else 0,
            instance_count=sum(n.instances for n in described.nodes.values()),
        )
        self.tally = RequestTally(shared=False)  # the event loop's alone

    # ----------------------------------------------------------------- inference
    async def infer(self, request: oip.InferRequest, timeout: float | None = None) -> oip.InferResponse:
        """Run a decoded request through the pipe: :meth:`submit`, :meth:`wait`, :meth:`respond`.

        Raises:
            InputError: a batch larger than ``max_batch_size``; RequestError: the pipe failed;
            asyncio.CancelledError: the caller went away (the items are cancelled in the pipe).
        """
        submitted = self.submit(request, timeout)
        if not submitted.done:
            await self.wait(submitted)
        return self.respond(submitted)

    def submit(self, request: oip.InferRequest, timeout: float | None = None, trace: TraceOption = None) -> Submitted:
        """Split ``request`` into items and queue them together (a cheap entry runs them on this
        thread at once, see :meth:`pipeserve.Pipe.submit_many`).

        ``timeout`` bounds the request in seconds; the request's own ``timeout`` parameter
        (microseconds) wins when it is shorter. ``trace`` applies to each item (a
        ``traceparent`` header's value, or the request's ``trace`` parameter).
        """
        start = time.perf_counter_ns()
        self.tally.admitted()
        try:
            items = oip.split_batch(request.inputs, self.inputs)
            if len(items) > self.max_batch_size:
                raise InputError(
                    f"model {self.name!r}: batch size {len(items)} exceeds max_batch_size {self.max_batch_size}"
                )
            asked = request.timeout_s
            if asked is not None and (timeout is None or asked < timeout):
                timeout = asked
            if trace is None and request.parameters and request.parameters.get("trace") is not None:
                trace = _flag(request.parameters["trace"])
            futures = self.pipe.submit_many(items, timeout=timeout, inline=True, trace=trace)
        except BaseException as exc:
            self._failed(start, exc)
            raise
        return Submitted(request, items, futures, start)

    async def wait(self, submitted: Submitted) -> None:
        """Wait until every item has its outcome; on the first failure, or if the waiting task
        is cancelled, cancel the others (those still queued are dropped) and raise."""
        futures = submitted.futures
        waiting = [asyncio.wrap_future(future) for future in futures]
        try:
            if len(waiting) == 1:
                await waiting[0]
            else:
                await asyncio.gather(*waiting)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            self._failed(submitted.start, exc)
            raise

    def respond(self, submitted: Submitted) -> oip.InferResponse:
        """The response of a finished request: its items' outputs stacked back in order.

        Raises:
            RequestError: an item failed (the first in order); ContractError: the outputs do not
                fit the declared ones.
        """
        try:
            for future in submitted.futures:
                future.result(0)
            outputs = oip.stack_outputs(submitted.items, self.outputs)
        except BaseException as exc:
            self._failed(submitted.start, exc)
            raise
        seconds = (time.perf_counter_ns() - submitted.start) / 1e9
        self.tally.served(seconds, len(submitted.items))
        return oip.InferResponse(self.name, tuple(outputs), model_version=VERSION, id=submitted.request.id)

    def _failed(self, start: int, error: BaseException) -> None:
        self.tally.failed((time.perf_counter_ns() - start) / 1e9, error)

    def counters(self) -> oip.ModelCounters:
        """Triton's statistics for this model: requests from the server's tally, queue and compute
        charged per request from the pipe's statistics (:func:`pipeserve.metrics.charge`)."""
        return model_counters(self.name, self.pipe, self.tally.snapshot(), self.entry)

    def warm_up(self, samples: list[dict[str, Any]]) -> None:
        """Run ``samples`` (item dicts) through the pipe once, blocking; errors propagate."""
        if samples:
            self.pipe([dict(sample) for sample in samples])


def _flag(value: Any) -> bool:
    """A boolean request parameter: a bool, or a string such as ``"true"``/``"false"``.

    Raises:
        InputError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int):
        return bool(value)
    raise InputError(f"the 'trace' parameter must be a boolean, got {value!r}")
