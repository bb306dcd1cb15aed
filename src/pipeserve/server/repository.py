"""The models a server serves: found in configurations, loaded, reloaded and unloaded by name.

A *source* is a TOML file (one model, named by its top-level ``name`` key or else the file's
stem), a folder (every ``*.toml`` file directly inside it is a model: the model repository), or
``ocr`` (the bundled PP-OCR pipeline). The repository extension's ``load`` (re)builds a model
from its source, or from a configuration given in the request, and swaps it in only once it is
ready, so that requests never see a half-built model; the old pipe then drains. ``unload``
takes a model out of service and drains it. The pipes of one server share the machine's cores:
each is built with its share, in proportion to its instances (SPEC 3).

NOTE [model states]
A model is ``LOADING`` while its pipe is built and warmed up (requests get NOT_FOUND if it was
never ready, or go on to the old pipe during a reload), ``READY`` while it serves,
``UNLOADING`` while its pipe drains after an unload, and ``UNAVAILABLE`` (with a reason) after
an unload or a failed load. Only ``READY`` models take requests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ConfigError, CpuBudget, JsonLinesSink, Pipe, instance_count, pipe, process_budget
from .errors import ModelNotFound, ModelNotReady
from .model import ServedModel

__all__ = ["ModelState", "Repository", "model_sources"]

Config = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class ModelState:
    """A model's entry in the repository index."""

    name: str
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""


class Repository:
    """The server's models.

    Args:
        sources: configuration files, folders of them, or ``ocr``.
        configs: more models, by name, given as configurations (dicts; warm-up files named in
            them must be absolute paths).
        cpu_count: cores the models share (default: the machine's): one CPU budget for all of
            them (NOTE [elastic budget]; the process's own without ``cpu_count``).
        drain_timeout: how long a replaced or unloaded model may take to finish its requests.
        trace_rate: the share of requests every model traces (None: each configuration's own).
        trace_file: a JSON-lines file every model's traces go to (None: the pipes' default,
            NOTE [traces]).

    Raises:
        ConfigError: a source that does not exist, or two models of one name.
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
        cpu_count: int | None = None,
        drain_timeout: float = 30.0,
        trace_rate: float | None = None,
        trace_file: str | None = None,
    ) -> None:
        self.cpu_count = cpu_count or os.cpu_count() or 1
        self.budget = CpuBudget(cpu_count) if cpu_count else process_budget()
        self.drain_timeout = drain_timeout
        self.trace_rate = trace_rate
        # One sink for every model: their traces share a file, written under one lock.
        self.trace_sink = JsonLinesSink(trace_file) if trace_file is not None else None
        self._configs: dict[str, tuple[Config, Path | None]] = model_sources(sources)
        for name, config in (configs or {}).items():
            if name in self._configs:
                raise ConfigError(f"two models are named {name!r}")
            self._configs[name] = (dict(config), None)
        self._models: dict[str, ServedModel] = {}
        self._states: dict[str, ModelState] = {}
        self._instances: dict[str, int] = {name: instance_count(config) for name, (config, _) in self._configs.items()}
        self._lock = threading.Lock()  # guards the dicts; builds happen outside it

    # ----------------------------------------------------------------- serving
    def get(self, name: str) -> ServedModel:
        """The ready model ``name``.

        Raises:
            ModelNotFound: no such model is loaded. ModelNotReady: it is loading or unloading.
        """
        model = self._models.get(name)
        if model is not None:
            return model
        state = self._states.get(name)
        if state is not None and state.state in ("LOADING", "UNLOADING"):
            raise ModelNotReady(f"model {name!r} is {state.state.lower()}")
        raise ModelNotFound(f"unknown model {name!r}; models: {sorted(self._models)}")

    def ready_models(self) -> list[ServedModel]:
        """The models serving now, by name."""
        return [self._models[name] for name in sorted(self._models)]

    def index(self, ready_only: bool = False) -> list[ModelState]:
        """Every model known (configured, loaded or unloaded), by name."""
        with self._lock:
            names = sorted(set(self._configs) | set(self._states))
            states = [self._states.get(name, ModelState(name, "UNAVAILABLE", "not loaded")) for name in names]
        return [s for s in states if s.state == "READY" or not ready_only]

    @property
    def loading(self) -> bool:
        """Whether a model is being loaded."""
        return any(state.state == "LOADING" for state in self._states.values())

    # ----------------------------------------------------------------- load and unload
    def load_all(self) -> None:
        """Load every configured model (at start).

        Raises:
            PipeServeError: a model failed to load; those loaded before are closed again.
        """
        with self._lock:
            for name in self._configs:  # they will share the cores: count them all from the start
                self._states.setdefault(name, ModelState(name, "LOADING"))
        try:
            for name in list(self._configs):
                self.load(name)
        except BaseException:
            self.close(timeout=5.0)
            raise

    def load(self, name: str, config: Mapping[str, Any] | None = None) -> ServedModel:
        """Build model ``name`` from its source (or from ``config``), warm it up, and put it in
        service, replacing and draining any previous version (NOTE [model states]).

        Raises:
            ModelNotFound: no source and no configuration for that name.
            PipeServeError: the configuration is invalid or the pipe failed to start.
        """
        with self._lock:
            if config is not None:
                self._configs[name] = (dict(config), None)
            if name not in self._configs:
                raise ModelNotFound(f"no configuration for model {name!r}; known: {sorted(self._configs)}")
            source, folder = self._configs[name]
            if name not in self._models:
                self._states[name] = ModelState(name, "LOADING")
        try:
            model = self._build(name, source, folder)
        except BaseException as exc:
            with self._lock:
                if name not in self._models:
                    self._states[name] = ModelState(name, "UNAVAILABLE", f"load failed: {exc}")
            raise
        with self._lock:
            previous = self._models.get(name)
            self._models[name] = model
            self._states[name] = ModelState(name, "READY")
        if previous is not None:
            previous.pipe.close(self.drain_timeout, drain=True)
        return model

    def unload(self, name: str) -> None:
        """Take model ``name`` out of service and drain it; unknown names are ignored, as in
        Triton."""
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                return
            self._states[name] = ModelState(name, "UNLOADING")
        model.pipe.close(self.drain_timeout, drain=True)
        with self._lock:
            if name not in self._models:
                self._states[name] = ModelState(name, "UNAVAILABLE", "unloaded")

    def close(self, timeout: float, *, drain: bool = True) -> None:
        """Close every model's pipe (draining first unless told not to)."""
        with self._lock:
            models, self._models = list(self._models.values()), {}
            for model in models:
                self._states[model.name] = ModelState(model.name, "UNAVAILABLE", "server stopped")
        threads = [
            threading.Thread(target=model.pipe.close, args=(timeout,), kwargs={"drain": drain}) for model in models
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 5.0)

    # ----------------------------------------------------------------- building
    def _build(self, name: str, source: Config, folder: Path | None) -> ServedModel:
        built: Pipe = pipe(source, cpu_count=self._share(name, source), budget=self.budget)
        try:
            if self.trace_rate is not None:
                built.trace_rate = self.trace_rate
            if self.trace_sink is not None:
                built.add_trace_sink(self.trace_sink)
            model = ServedModel(name, built, str(source) if not isinstance(source, Mapping) else name)
            model.warm_up(_warm_up_items(model, folder))
        except BaseException:
            built.close()
            raise
        return model

    def _share(self, name: str, source: Config) -> int:
        """Cores for model ``name``'s new pipe: the instances of every model that is loaded or
        loading share the machine, so this one gets its instances' part of it (at least one
        thread each)."""
        mine = instance_count(source)
        self._instances[name] = mine
        with self._lock:
            sharing = {n for n, state in self._states.items() if state.state in ("LOADING", "READY")} - {name}
            others = sum(self._instances.get(n, 0) for n in sharing)
        # A model of Remote nodes only computes nothing here: one core is plenty for its Python.
        return max(1, mine, self.cpu_count * mine // max(1, mine + others))


def model_sources(sources: Sequence[str]) -> dict[str, tuple[Config, Path | None]]:
    """The models ``sources`` name (see :class:`Repository`), by name: each one's configuration
    (a file's path, or a dict) and the folder its relative paths start from (None for a dict).

    Raises:
        ConfigError: a source that does not exist, or two models of one name.
    """
    found: dict[str, tuple[Config, Path | None]] = {}
    for source in sources:
        for name, config, folder in _expand(source):
            if name in found:
                raise ConfigError(f"two models are named {name!r} (the second from {source!r})")
            found[name] = (config, folder)
    return found


def _expand(source: str) -> list[tuple[str, Config, Path | None]]:
    """The models a source names: (name, configuration, folder for relative paths)."""
    if source == "ocr":
        from ..examples.ocr import config as ocr_config

        return [("ocr", ocr_config(), None)]
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise ConfigError(f"model repository {source!r} holds no *.toml configuration")
        return [(_name_of(file), str(file), file.parent) for file in files]
    if not path.is_file():
        raise ConfigError(f"no configuration file or folder {source!r}")
    return [(_name_of(path), str(path), path.parent)]


def _name_of(path: Path) -> str:
    import tomllib

    try:
        with path.open("rb") as handle:
            name = tomllib.load(handle).get("name")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from exc
    return str(name) if isinstance(name, str) and name else path.stem


def _warm_up_items(model: ServedModel, folder: Path | None) -> list[dict[str, Any]]:
    """Items from the entry node's ``warmup`` key: a number of items built from the declared
    inputs (zeros, empty bytes, JSON null), or a list of files (relative to the configuration)
    whose bytes, or arrays for ``.npy`` files, become the first input."""
    raw = model.pipe.config.nodes[model.entry].params.get("warmup")
    if raw is None:
        return []
    first = model.inputs[0]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return [{spec.key: _zero(spec) for spec in model.inputs} for _ in range(raw)]
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(entry, str) for entry in raw):
        raise ConfigError(f"expected a count or a list of files, got {raw!r}", node=model.entry, key="warmup")
    items = []
    for entry in raw:
        path = Path(entry) if folder is None or Path(entry).is_absolute() else folder / entry
        if not path.is_file():
            raise ConfigError(f"no warm-up file {str(path)!r}", node=model.entry, key="warmup")
        if path.suffix == ".npy":
            import numpy as np

            items.append({first.key: np.load(path)})
        else:
            items.append({first.key: path.read_bytes()})
    return items


def _zero(spec: Any) -> Any:
    if spec.json:
        return None
    if spec.datatype == "BYTES":
        return b""
    import numpy as np

    from ..oip import numpy_dtype

    return np.zeros(tuple(max(d, 1) for d in spec.shape), numpy_dtype(spec.datatype))
