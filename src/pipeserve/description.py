"""What ``Pipe.describe()`` returns: the pipe's entries and nodes, as frozen data.

The layers on top read it to present a pipe: the server turns each entry into a model's metadata
and configuration, the status page draws it, the Ray adapter sizes replicas by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .signature import TensorSpec

__all__ = ["EntryDescription", "GraphNodeDescription", "NodeDescription", "PipeDescription"]


@dataclass(frozen=True)
class NodeDescription:
    """One scheduled node.

    Attributes:
        name: its name.
        backend: its backend expression (of the first bucket group).
        instance_kind: ``thread`` or ``process``.
        instances: how many instances it runs (all groups together).
        cpu_threads: the threads each instance may use (its share of the pipe's CPU budget).
        batch_range: the smallest and largest batch it runs.
        batching_timeout_ms: its longest batching window, in milliseconds.
        max_queue: its queue bound in items (0: none).
        active_instances: the instances taking batches now (``instances`` unless
            :meth:`pipeserve.Pipe.adjust` parked some).
        batch_limit: the largest batch its backends accept (``max`` can be raised to it).
        computes: its instances compute on the CPU (they share the pipe's cores; a ``Remote``
            node's wait on the network).
    """

    name: str
    backend: str
    instance_kind: str
    instances: int
    cpu_threads: int
    batch_range: tuple[int, int]
    batching_timeout_ms: float
    max_queue: int
    active_instances: int
    batch_limit: int = 1
    computes: bool = True


@dataclass(frozen=True)
class EntryDescription:
    """One entry of the pipe (a root a request may start at).

    Attributes:
        name: the entry node.
        nodes: every graph node a request through it may visit (Jump targets included), in
            configuration order.
        batch_range: the batch range of the entry node (1..1 for a Jump/MapReduce entry).
        inputs, outputs: the tensors it declares (``inputs``/``outputs`` keys; empty when none).
        instance_kinds: the instance kinds (``thread``, ``process``) of the nodes it visits.
    """

    name: str
    nodes: tuple[str, ...]
    batch_range: tuple[int, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    instance_kinds: frozenset[str]


@dataclass(frozen=True)
class GraphNodeDescription:
    """One node of the graph, as drawn (logical nodes and Jump/MapReduce nodes included).

    Attributes:
        name: its name; kind: ``compute``, ``jump`` or ``mapreduce``.
        scheduler: the scheduled node that runs it (itself, or the node a logical node runs on;
            None for Jump/MapReduce); next: the nodes it feeds; jump: the sub-graph it starts
            (Jump/MapReduce); filter: its filter, if any.
    """

    name: str
    kind: str
    scheduler: str | None
    next: tuple[str, ...]
    jump: str | None
    filter: str | None


@dataclass(frozen=True)
class PipeDescription:
    """The whole pipe: its entries (in order, the default first), its scheduled nodes, and its
    graph (every node, in configuration order, with its links)."""

    entries: Mapping[str, EntryDescription]
    nodes: Mapping[str, NodeDescription]
    graph: Mapping[str, GraphNodeDescription] = field(default_factory=dict)
