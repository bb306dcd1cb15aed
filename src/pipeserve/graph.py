"""The DAG of a pipe: built from the configuration, validated, immutable afterwards.

Keys read per node (SPEC 4): ``next`` (successors), ``map`` (how to build the input from
ancestors' outputs), ``filter`` (the decision before the node runs), ``jump``/``split``/``merge``
(sub-requests, for ``backend = "Jump"`` or ``"MapReduce"``). A node named ``rec.2`` is *logical*:
it has its own edges and filter but runs on the instances of node ``rec``.

Validation raises :class:`~pipeserve.errors.ConfigError` naming the node and key: unknown nodes in
``next``/``map``/``jump``, cycles, a node reachable from more than one root, several predecessors
without ``map``, a ``map`` source that is not an ancestor, a filter on a root, an entry whose
subgraph has more than one sink, a jump into itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .config import NodeConfig, get_list, get_str
from .errors import ConfigError, InputError, RequestError

__all__ = ["Graph", "GraphNode", "MapSource", "Plan", "build_input", "parse_map"]

Item = dict[str, Any]

COMPUTE, JUMP, MAPREDUCE = "compute", "jump", "mapreduce"


@dataclass(frozen=True)
class MapSource:
    """Keys copied from one ancestor's output: ``node[src:dst,...]`` (node None: the predecessor)."""

    node: str | None
    pairs: tuple[tuple[str, str], ...]


def parse_map(text: str, node: str) -> tuple[MapSource, ...]:
    """Parse ``"B[result:data,k:k2],C[result:extra]"`` or ``"[result:data]"``."""
    sources = []
    rest = text.strip()
    while rest:
        open_at = rest.find("[")
        close_at = rest.find("]", open_at)
        if open_at < 0 or close_at < 0:
            raise ConfigError(f"expected 'node[src:dst,...]' entries, got {text!r}", node=node, key="map")
        name = rest[:open_at].strip().lstrip(",").strip() or None
        pairs = []
        for entry in rest[open_at + 1 : close_at].split(","):
            source, sep, target = entry.partition(":")
            if not sep or not source.strip() or not target.strip():
                raise ConfigError(f"expected 'src:dst' pairs, got {entry.strip()!r} in {text!r}", node=node, key="map")
            pairs.append((source.strip(), target.strip()))
        sources.append(MapSource(name, tuple(pairs)))
        rest = rest[close_at + 1 :].strip().lstrip(",").strip()
    if not sources:
        raise ConfigError("an empty map", node=node, key="map")
    return tuple(sources)


@dataclass(frozen=True)
class GraphNode:
    """One node of the graph.

    Attributes:
        name: its name.
        physical: the node whose instances run it (itself unless it is logical, ``rec.2``).
        kind: ``compute`` (a scheduled backend), ``jump`` or ``mapreduce``.
        next: successors, preds: predecessors.
        map: how its input is built, or None (a shallow copy of the single predecessor's output).
        filter: the filter's name (None for roots).
        jump, split, merge: for sub-requests.
    """

    name: str
    physical: str
    kind: str
    next: tuple[str, ...]
    preds: tuple[str, ...] = ()
    map: tuple[MapSource, ...] | None = None
    filter: str | None = None
    jump: str | None = None
    split: str = "data"
    merge: tuple[str, ...] = ("result",)


@dataclass
class Plan:
    """How a request walks the subgraph of one entry.

    Attributes:
        entry: where it starts; sink: where it ends (its output is the request's).
        nodes: every node of the subgraph; pending: for each, its predecessors inside the subgraph.
    """

    entry: str
    sink: str
    nodes: frozenset[str]
    pending: dict[str, int]
    successors: dict[str, tuple[str, ...]]
    serial_chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subgraph_skips: dict[str, frozenset[str]] = field(default_factory=dict)


class Graph:
    """The validated graph. Build with :meth:`from_config`."""

    def __init__(self, nodes: Mapping[str, GraphNode]) -> None:
        self.nodes = dict(nodes)
        self.roots = tuple(name for name, node in self.nodes.items() if not node.preds)
        self._plans: dict[str, Plan | ConfigError] = {}

    @classmethod
    def from_config(cls, configs: Mapping[str, NodeConfig]) -> Graph:
        """Read edges, maps, filters and jumps, and validate them (see the module docstring)."""
        successors = {name: tuple(get_list(c.params, "next", node=name)) for name, c in configs.items()}
        for name, targets in successors.items():
            for target in targets:
                if target not in configs:
                    raise ConfigError(f"unknown node {target!r}", node=name, key="next")
        preds: dict[str, list[str]] = {name: [] for name in configs}
        for name, targets in successors.items():
            for target in targets:
                preds[target].append(name)
        nodes = {name: _node(c, successors[name], tuple(preds[name]), configs) for name, c in configs.items()}
        graph = cls(nodes)
        graph._validate()
        return graph

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        self._check_acyclic()
        owner: dict[str, str] = {}
        for root in self.roots:
            for name in self.descendants(root):
                if name in owner and owner[name] != root:
                    raise ConfigError(f"reachable from two roots, {owner[name]!r} and {root!r}", node=name, key="next")
                owner[name] = root
        for node in self.nodes.values():
            if len(node.preds) > 1 and node.map is None:
                raise ConfigError(
                    f"has {len(node.preds)} predecessors {list(node.preds)}; say which keys to take with 'map'",
                    node=node.name,
                    key="map",
                )
            if not node.preds and node.filter is not None:
                raise ConfigError("a root takes no filter", node=node.name, key="filter")
            ancestors = self.ancestors(node.name)
            for source in node.map or ():
                if source.node is not None and source.node not in ancestors:
                    raise ConfigError(f"map source {source.node!r} is not an ancestor", node=node.name, key="map")
            if node.jump is not None:
                if node.jump not in self.nodes:
                    raise ConfigError(f"unknown node {node.jump!r}", node=node.name, key="jump")
                if node.name in self.descendants(node.jump) or node.jump in ancestors | {node.name}:
                    raise ConfigError(f"jumping to {node.jump!r} would re-enter this node", node=node.name, key="jump")
        for root in self.roots:
            plan = self.plan(root, as_config_error=True)
            del plan

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            for target in self.nodes[name].next:
                if state.get(target) == 1:
                    cycle = " -> ".join([*path[path.index(target) :], target])
                    raise ConfigError(f"cycle {cycle}", node=name, key="next")
                if target not in state:
                    visit(target, [*path, target])
            state[name] = 2

        for name in self.nodes:
            if name not in state:
                visit(name, [name])

    # ----------------------------------------------------------------- queries
    def descendants(self, name: str) -> set[str]:
        """``name`` and every node reachable from it."""
        seen = {name}
        stack = [name]
        while stack:
            for target in self.nodes[stack.pop()].next:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    def ancestors(self, name: str) -> set[str]:
        """Every node from which ``name`` is reachable (not ``name`` itself)."""
        return self._ancestors[name]

    @cached_property
    def _ancestors(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}

        def collect(name: str) -> set[str]:
            if name not in out:
                found: set[str] = set()
                for pred in self.nodes[name].preds:
                    found.add(pred)
                    found |= collect(pred)
                out[name] = found
            return out[name]

        for name in self.nodes:
            collect(name)
        return out

    def plan(self, entry: str, *, as_config_error: bool = False) -> Plan:
        """The walk plan of ``entry`` (any node; a non-root ignores its ancestors).

        Raises:
            ConfigError (at construction) or InputError (for a ``node_name`` at call time): the
            entry's subgraph does not end in exactly one sink.
        """
        cached = self._plans.get(entry)
        if cached is None:
            cached = self._plans[entry] = self._make_plan(entry)
        if isinstance(cached, ConfigError):
            if as_config_error:
                raise cached
            raise InputError(f"node_name {entry!r} cannot be an entry: {cached}")
        return cached

    def _make_plan(self, entry: str) -> Plan | ConfigError:
        members = self.descendants(entry)
        sinks = [name for name in members if not self.nodes[name].next]
        if len(sinks) != 1:
            return ConfigError(
                f"the subgraph of entry {entry!r} must end in exactly one node, not {sorted(sinks)}",
                node=entry,
                key="next",
            )
        pending = {name: sum(p in members for p in self.nodes[name].preds) for name in members}
        pending[entry] = 0
        for name in members:
            for source in self.nodes[name].map or ():
                if name != entry and source.node is not None and source.node not in members:
                    return ConfigError(
                        f"map source {source.node!r} of {name!r} lies outside the subgraph of {entry!r}",
                        node=name,
                        key="map",
                    )
        successors = {name: self.nodes[name].next for name in members}
        return Plan(
            entry,
            sinks[0],
            frozenset(members),
            pending,
            successors,
            self._serial_chains(members),
            self._closures(members),
        )

    def _serial_chains(self, members: set[str]) -> dict[str, tuple[str, ...]]:
        """For each node: itself and the chain of single-successor nodes after it."""
        chains = {}
        for name in members:
            chain = [name]
            current = name
            while len(self.nodes[current].next) == 1:
                following = self.nodes[current].next[0]
                if len(self.nodes[following].preds) != 1:
                    break
                chain.append(following)
                current = following
            chains[name] = tuple(chain)
        return chains

    def _closures(self, members: set[str]) -> dict[str, frozenset[str]]:
        """For each node: the largest subgraph rooted there whose nodes have all their
        predecessors inside it (SubGraphSkip)."""
        closures = {}
        for name in members:
            inside = {name}
            grown = True
            while grown:
                grown = False
                for candidate in members - inside:
                    preds = self.nodes[candidate].preds
                    if preds and all(p in inside for p in preds):
                        inside.add(candidate)
                        grown = True
            closures[name] = frozenset(inside)
        return closures


def _node(
    config: NodeConfig, successors: tuple[str, ...], preds: tuple[str, ...], configs: Mapping[str, NodeConfig]
) -> GraphNode:
    name = config.name
    params = config.params
    physical = name
    if "." in name:
        physical = name.split(".", 1)[0]
        if physical not in configs:
            raise ConfigError(f"logical node of {physical!r}, which is not defined", node=name)
    backend = get_str(configs[physical].params, "backend", "Identity", node=physical).strip()
    kind = {"Jump": JUMP, "MapReduce": MAPREDUCE}.get(backend, COMPUTE)
    map_text = params.get("map")
    sources = parse_map(str(map_text), name) if map_text is not None else None
    if sources is not None:
        unnamed = [s for s in sources if s.node is None]
        if unnamed and len(preds) != 1:
            raise ConfigError("'[src:dst]' without a node name needs exactly one predecessor", node=name, key="map")
        sources = tuple(MapSource(s.node or preds[0], s.pairs) for s in sources)
        for source in sources:
            if source.node not in configs:
                raise ConfigError(f"unknown node {source.node!r}", node=name, key="map")
    explicit = params.get("filter")
    if explicit is not None:
        filter_name: str | None = str(explicit)
    elif not preds:
        filter_name = None
    else:
        filter_name = "swap" if len(preds) == 1 and sources is None else "Run"
    jump = params.get("jump")
    if kind != COMPUTE and jump is None:
        raise ConfigError(f"backend {backend!r} needs 'jump', the node to send items to", node=name, key="jump")
    return GraphNode(
        name=name,
        physical=physical,
        kind=kind,
        next=successors,
        preds=preds,
        map=sources,
        filter=filter_name,
        jump=str(jump) if jump is not None else None,
        split=get_str(params, "split", "data", node=name),
        merge=tuple(get_list(params, "merge", ["result"], node=name)),
    )


def build_input(node: GraphNode, outputs: Mapping[str, Item]) -> Item:
    """The input of ``node`` from the outputs of its ancestors (SPEC 4; a pure function).

    Without ``map``: a shallow copy of the single predecessor's output. With ``map``: a new dict
    of the listed keys (a key missing from its source is left out); ``context`` is carried over
    from the first source that has one when the map does not set it.

    Raises:
        RequestError: the built dict has no ``data``.
    """
    if node.map is None:
        return dict(outputs[node.preds[0]])
    built: Item = {}
    for source in node.map:
        output = outputs[source.node]  # type: ignore[index]
        for key, target in source.pairs:
            if key in output:
                built[target] = output[key]
    if "context" not in built:
        for source in node.map:
            output = outputs[source.node]  # type: ignore[index]
            if "context" in output:
                built["context"] = output["context"]
                break
    if "data" not in built:
        raise RequestError(
            f"node {node.name!r}: the input built by 'map' has no 'data' (keys: {sorted(built)})", node=node.name
        )
    return built
