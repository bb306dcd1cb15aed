"""pipeserve: serve deep-learning pipelines at near the hardware's limit.

::

    import pipeserve as ps
    pipe = ps.pipe({"backend": "Identity", "instance_num": 2})
    item = {"data": 1}
    pipe(item)            # item["result"] == 1

Importing this package does no I/O, starts no thread and imports no optional dependency.
"""

from .backend import Backend, Options, PartialFailure
from .budget import BudgetStatistics, CpuBudget, CpuSlot, process_budget
from .description import EntryDescription, GraphNodeDescription, NodeDescription, PipeDescription
from .errors import (
    BackendError,
    ComputeTimeout,
    ConfigError,
    ContractError,
    FilterError,
    InputError,
    MissingDependencyError,
    Overloaded,
    PipeClosed,
    PipeServeError,
    RegistryError,
    RemoteError,
    RequestError,
    RequestTimeout,
    UnknownNameError,
    WorkerDied,
)
from .events import Event
from .filters import Status
from .pipe import Observer, Pipe, PipeState, TraceOption, instance_count, pipe
from .registry import list_backends, list_filters, register_backend, register_filter, register_lazy_backend
from .signature import DATATYPES, TensorSpec
from .statistics import Health, InstanceHealth, InstanceStatistics, NodeHealth, NodeStatistics
from .tracing import JsonLinesSink, OpenTelemetrySink, Span, TraceParent, TraceSink, parse_traceparent

__version__ = "0.1.0"

__all__ = [
    "DATATYPES",
    "Backend",
    "BackendError",
    "ComputeTimeout",
    "ConfigError",
    "ContractError",
    "EntryDescription",
    "Event",
    "FilterError",
    "GraphNodeDescription",
    "Health",
    "InputError",
    "InstanceHealth",
    "InstanceStatistics",
    "JsonLinesSink",
    "MissingDependencyError",
    "NodeDescription",
    "NodeHealth",
    "NodeStatistics",
    "Observer",
    "OpenTelemetrySink",
    "Options",
    "Overloaded",
    "PartialFailure",
    "Pipe",
    "PipeClosed",
    "PipeDescription",
    "PipeServeError",
    "PipeState",
    "RegistryError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "Span",
    "Status",
    "TensorSpec",
    "TraceOption",
    "TraceParent",
    "TraceSink",
    "UnknownNameError",
    "WorkerDied",
    "__version__",
    "instance_count",
    "process_budget",
    "BudgetStatistics",
    "CpuBudget",
    "CpuSlot",
    "list_backends",
    "list_filters",
    "parse_traceparent",
    "pipe",
    "register_backend",
    "register_filter",
    "register_lazy_backend",
]
