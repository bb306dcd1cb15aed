"""pipeserve: serve deep-learning pipelines at near the hardware's limit.

::

    import pipeserve as ps
    pipe = ps.pipe({"backend": "Identity", "instance_num": 2})
    item = {"data": 1}
    pipe(item)            # item["result"] == 1

Importing this package does no I/O, starts no thread and imports no optional dependency.
"""

from .backend import Backend, Options, PartialFailure
from .errors import (
    BackendError,
    ConfigError,
    ContractError,
    FilterError,
    InputError,
    MissingDependencyError,
    Overloaded,
    PipeClosed,
    PipeServeError,
    RegistryError,
    RequestError,
    RequestTimeout,
    UnknownNameError,
)
from .events import Event
from .filters import Status
from .pipe import Pipe, pipe
from .registry import list_backends, list_filters, register_backend, register_filter, register_lazy_backend

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "ConfigError",
    "ContractError",
    "Event",
    "FilterError",
    "InputError",
    "MissingDependencyError",
    "Options",
    "Overloaded",
    "PartialFailure",
    "Pipe",
    "PipeClosed",
    "PipeServeError",
    "RegistryError",
    "RequestError",
    "RequestTimeout",
    "Status",
    "UnknownNameError",
    "__version__",
    "list_backends",
    "list_filters",
    "pipe",
    "register_backend",
    "register_filter",
    "register_lazy_backend",
]
