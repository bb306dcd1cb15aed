"""Drawing a pipe's graph: Mermaid and Graphviz DOT text, and rendering DOT with Graphviz.

Each node shows its backend, instances, batch range and filter; a logical node (``rec.2``) shows
the node it runs on; Jump/MapReduce nodes have a dashed edge to their target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from .config import load_config
from .errors import MissingDependencyError
from .graph import COMPUTE, MAPREDUCE, Graph

__all__ = ["render", "to_dot", "to_mermaid"]


def _describe(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Graph, dict[str, list[str]]]:
    config = load_config(source)
    graph = Graph.from_config(config.nodes)
    lines: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        params = config.nodes[node.physical].params
        if node.kind == COMPUTE:
            parts = [str(params.get("backend", "Identity"))]
            if node.physical != name:
                parts.append(f"on {node.physical}")
            else:
                parts.append(f"x{params.get('instance_num', 1)}, batch {params.get('min', 1)}..{params.get('max', 1)}")
        else:
            kind = "MapReduce" if node.kind == MAPREDUCE else "Jump"
            parts = [f"{kind} -> {node.jump}"]
            if node.kind == MAPREDUCE:
                parts.append(f"split {node.split}, merge {','.join(node.merge)}")
        if node.filter is not None:
            parts.append(f"filter {node.filter}")
        if node.map is not None:
            parts.append("map " + "; ".join(f"{s.node}[{','.join(a + ':' + b for a, b in s.pairs)}]" for s in node.map))
        lines[name] = parts
    return graph, lines


def to_mermaid(source: str | os.PathLike[str] | Mapping[str, Any]) -> str:
    """The graph as a Mermaid flowchart."""
    graph, lines = _describe(source)
    ids = {name: f"n{index}" for index, name in enumerate(graph.nodes)}
    out = ["flowchart LR"]
    for name, parts in lines.items():
        label = "<br/>".join([f"<b>{name}</b>", *parts]).replace('"', "'")
        out.append(f'    {ids[name]}["{label}"]')
    for name, node in graph.nodes.items():
        for target in node.next:
            out.append(f"    {ids[name]} --> {ids[target]}")
        if node.jump is not None:
            out.append(
                f"    {ids[name]} -. {('map-reduce' if node.kind == MAPREDUCE else 'jump')} .-> {ids[node.jump]}"
            )
    return "\n".join(out) + "\n"


def to_dot(source: str | os.PathLike[str] | Mapping[str, Any]) -> str:
    """The graph in Graphviz DOT."""
    graph, lines = _describe(source)
    out = ["digraph pipeserve {", "    rankdir=LR;", '    node [shape=box, style=rounded, fontname="Helvetica"];']
    for name, parts in lines.items():
        label = "\\n".join([name, *parts]).replace('"', "'")
        out.append(f'    "{name}" [label="{label}"];')
    for name, node in graph.nodes.items():
        for target in node.next:
            out.append(f'    "{name}" -> "{target}";')
        if node.jump is not None:
            kind = "map-reduce" if node.kind == MAPREDUCE else "jump"
            out.append(f'    "{name}" -> "{node.jump}" [style=dashed, label="{kind}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot_text: str, path: str, fmt: str) -> None:
    """Render DOT text to ``path`` as ``fmt`` (png, svg) with Graphviz's ``dot``.

    Raises:
        MissingDependencyError: Graphviz is not installed.
    """
    executable = shutil.which("dot")
    if executable is None:
        raise MissingDependencyError("rendering needs Graphviz's 'dot' (apt-get install graphviz)")
    subprocess.run([executable, f"-T{fmt}", "-o", path], input=dot_text.encode(), check=True)
