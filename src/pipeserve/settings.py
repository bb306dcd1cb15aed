"""A node's scheduling settings, read once from its configuration and frozen.

The backend's own parameters stay in :class:`~pipeserve.config.NodeConfig`; these are the keys the
scheduler itself acts on (SPEC 3). Reading them once means a bad value fails when the pipe is
built, with the node and key named, and the hot path reads plain attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .batching import Bucketing
from .config import NodeConfig, get_bool, get_float, get_int, get_list, get_str
from .errors import ConfigError

__all__ = ["NodeSettings"]


@dataclass(frozen=True)
class NodeSettings:
    """The scheduling keys of one node.

    Attributes:
        isolate: re-run a failed batch item by item (NOTE [error isolation]).
        inline: a blocking caller may borrow an idle instance (NOTE [inline execution]).
        process: instances run in worker processes (NOTE [process instances]).
        max_queue: the queue bound in items (0: unbounded).
        block: wait for room when the queue is full, rather than fail with Overloaded.
        bucketing: which bucket an item belongs to.
        imports: modules to import before the backends are built (they register backends).
        compute_timeout: seconds after which a running batch is given up (0: never; NOTE [hung
            backends] in :mod:`pipeserve.workers`).
    """

    isolate: bool
    inline: bool
    process: bool
    max_queue: int
    block: bool
    bucketing: Bucketing
    imports: tuple[str, ...]
    compute_timeout: float = 0.0

    @classmethod
    def from_config(cls, config: NodeConfig) -> NodeSettings:
        """Read and check the keys.

        Raises:
            ConfigError: a value of the wrong type or outside its choices, naming node and key.
        """
        params, node = config.params, config.name
        instance_type = get_str(params, "instance_type", "thread", node=node)
        if instance_type not in ("thread", "process"):
            raise ConfigError(f"expected 'thread' or 'process', got {instance_type!r}", node=node, key="instance_type")
        overload = get_str(params, "overload", "error", node=node)
        if overload not in ("error", "block"):
            raise ConfigError(f"expected 'error' or 'block', got {overload!r}", node=node, key="overload")
        return cls(
            isolate=get_bool(params, "isolate", True, node=node),
            inline=get_bool(params, "inline", True, node=node),
            process=instance_type == "process",
            max_queue=get_int(params, "max_queue", 0, node=node, minimum=0),
            block=overload == "block",
            bucketing=Bucketing.from_params(params, node),
            imports=tuple(get_list(params, "imports", node=node)),
            compute_timeout=get_float(params, "compute_timeout", 0.0, node=node, minimum=0.0) / 1e3,
        )
