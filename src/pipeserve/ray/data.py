"""A pipeline over a Ray Data dataset: a pool of actors, each holding one pipe, each batch of rows
going into its pipe at once so that the pipe's nodes batch them as they batch requests.

::

    import ray, pipeserve.ray
    rows = ray.data.from_items([{"data": image} for image in images])
    results = pipeserve.ray.map_batches(rows, "ocr", concurrency=2, num_cpus=1)
    for row in results.iter_rows():
        row["result"], row["error"]           # the item's result, or None and the error's text

Rows are items: each column is an item key (``columns`` renames them, e.g. ``{"image": "data"}``);
the item's ``result`` comes back as the ``result`` column (``output``), next to the row's columns.
A row that fails gets ``None`` there and its error (``"RequestTimeout: ..."``) in the ``error``
column, and the job goes on; ``errors = "raise"`` fails the job on the first failing row instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pipeserve as ps

from .. import ConfigError, PipeServeError, RequestError

__all__ = ["PipeMapper", "map_batches"]


class PipeMapper:
    """The callable class ``Dataset.map_batches`` runs in each actor (``batch_format="numpy"``).

    Args:
        config: the pipeline (a TOML path, a dict, or ``"ocr"``).
        cores: the actor's CPU budget (its ``num_cpus``, whole, at least 1).
        columns: column -> item key renames (others keep their names).
        output: the column that receives each item's ``result``.
        error_column: the column that receives each failing row's error (None elsewhere).
        errors: ``"report"`` (per row) or ``"raise"`` (the first failure fails the batch).
        timeout: seconds each row may take (None: no deadline).
    """

    def __init__(
        self,
        config: Any,
        *,
        cores: int = 1,
        columns: Mapping[str, str] | None = None,
        output: str = "result",
        error_column: str = "error",
        errors: str = "report",
        timeout: float | None = None,
    ) -> None:
        if errors not in ("report", "raise"):
            raise ConfigError(f"errors must be 'report' or 'raise', got {errors!r}")
        if config == "ocr":
            from ..examples.ocr import config as ocr_config

            config = ocr_config()
        self.pipe = ps.pipe(config, budget=ps.CpuBudget(max(1, cores)))
        self.columns = dict(columns or {})
        self.output = output
        self.error_column = error_column
        self.raise_errors = errors == "raise"
        self.timeout = timeout

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = len(next(iter(batch.values()))) if batch else 0
        keys = [(column, self.columns.get(column, column)) for column in batch]
        items = [{key: batch[column][row] for column, key in keys} for row in range(rows)]
        results: list[Any] = []
        errors: list[str | None] = []
        for outcome in self._run(items):
            if isinstance(outcome, BaseException):
                if self.raise_errors:
                    raise outcome
                results.append(None)
                errors.append(f"{type(outcome).__name__}: {outcome}")
            else:
                results.append(outcome.get("result"))  # a pipe may end an item without one
                errors.append(None)
        out = dict(batch)
        out[self.output] = _column(results, np)
        out[self.error_column] = _column(errors, np)
        return out

    def _run(self, items: list[dict[str, Any]]) -> list[Any]:
        """Each item (done) or its error. The rows go in together; if the pipe refuses them as a
        group (a bounded queue smaller than the batch, say), one at a time, each with its own
        outcome."""
        try:
            futures = self.pipe.submit_many(items, timeout=self.timeout)
        except PipeServeError:
            outcomes: list[Any] = []
            for item in items:
                try:
                    outcomes.append(self.pipe(item, timeout=self.timeout))
                except PipeServeError as exc:
                    outcomes.append(exc)
            return outcomes
        found: list[Any] = []
        for future in futures:
            try:
                found.append(future.result())
            except RequestError as exc:
                found.append(exc)
        return found

    def __del__(self) -> None:
        pipe = getattr(self, "pipe", None)
        if pipe is not None:
            pipe.close()


def _column(values: list[Any], np: Any) -> Any:
    """Values as one numpy column: stacked when they are arrays of one shape and type, else
    an object array (one Python value per row)."""
    if values and all(isinstance(v, np.ndarray) for v in values):
        first = values[0]
        if all(v.shape == first.shape and v.dtype == first.dtype for v in values):
            return np.stack(values)
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def map_batches(
    dataset: Any,
    config: Any,
    *,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int = 64,
    columns: Mapping[str, str] | None = None,
    output: str = "result",
    error_column: str = "error",
    errors: str = "report",
    timeout: float | None = None,
) -> Any:
    """``dataset`` with each row run through the pipeline ``config``: a pool of ``concurrency``
    actors (or an autoscaling range), each a pipe with ``num_cpus`` cores as its CPU budget,
    given ``batch_size`` rows at a time. Lazy, as Ray Data is: nothing runs until the result is
    consumed.

    Raises:
        ConfigError: ``errors`` is neither ``"report"`` nor ``"raise"``.
    """
    if errors not in ("report", "raise"):
        raise ConfigError(f"errors must be 'report' or 'raise', got {errors!r}")
    return dataset.map_batches(
        PipeMapper,
        fn_constructor_kwargs={
            "config": config,
            "cores": max(1, round(num_cpus)),
            "columns": columns,
            "output": output,
            "error_column": error_column,
            "errors": errors,
            "timeout": timeout,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )
