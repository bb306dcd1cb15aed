"""``import pipeserve`` is cheap: no optional dependency, no thread, no I/O."""

import ast
import subprocess
import sys
from pathlib import Path

OPTIONAL = [
    "numpy", "cv2", "onnxruntime", "torch", "ray", "starlette", "uvicorn", "PIL", "grpc", "tritonclient",
    "prometheus_client", "opentelemetry", "matplotlib",
]  # fmt: skip


def test_import_pulls_in_no_optional_dependency_and_starts_no_thread() -> None:
    code = (
        "import sys, threading\n"
        "import pipeserve\n"
        f"heavy = [m for m in {OPTIONAL!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_core_modules_import_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import pipeserve, pipeserve.backends.basic\n"
        "p = pipeserve.pipe({'backend': 'S[Identity,Sleep]'}); p({'data': 1}); p.close()\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "allowed = set(sys.stdlib_module_names) | {'pipeserve'}\n"
        "print(sorted(new - allowed))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------- import direction
# The core's module map, lowest first: a module may import only modules of lower layers (type-only
# imports included). A new core module must be placed here; docs/architecture.md draws this map.
CORE_LAYERS = [
    {"errors", "events", "filters", "budget", "expected"},
    {"config", "syntax", "signature", "tracing"},
    {"request", "backend", "batching", "graph", "description"},
    {"registry", "settings", "fanout", "diagram"},
    {"instance", "process"},
    {"statistics", "delivery"},
    {"dispatch"},
    {"workers"},
    {"node"},
    {"executor"},
    {"pipe"},
    {"__init__"},
]
# What a backend author (and the built-in backends) may import of the core.
BACKEND_KIT = {"backend", "config", "errors", "filters"}
# The layers on top see pipeserve as its users do: the names in pipeserve.__all__ and these
# public modules (the shared protocol codec among them), plus their own package.
PUBLIC_MODULES = {"bench", "cli", "diagram", "examples", "metrics", "oip", "ray", "server", "tuning"}
UPPER = ("cli", "__main__", "bench", "examples", "server", "ray", "oip", "metrics", "backends.remote")

SRC = Path(__file__).resolve().parent.parent / "src" / "pipeserve"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for every import in ``path``, nested ones included."""
    package = ".".join(("pipeserve", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    if path.name == "__init__.py":
        package = ".".join(("pipeserve", *path.relative_to(SRC).parts[:-1]))
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


def test_core_modules_import_only_downward() -> None:
    layer_of = {name: index for index, names in enumerate(CORE_LAYERS) for name in names}
    core = sorted(p for p in SRC.glob("*.py") if p.stem not in ("cli", "__main__", "ray", "metrics"))
    unplaced = [p.stem for p in core if p.stem not in layer_of]
    assert not unplaced, f"place these core modules in CORE_LAYERS: {unplaced}"
    upward = []
    for path in core:
        for module, names in _imports(path):
            if not module.startswith("pipeserve"):
                continue
            targets = [module.split(".")[1]] if module != "pipeserve" else names
            for target in targets:
                if target in layer_of and layer_of[target] >= layer_of[path.stem] and target != path.stem:
                    upward.append(f"{path.stem} -> {target}")
                if target == "backends":
                    upward.append(f"{path.stem} -> backends (load them by name through the registry)")
    assert not upward, upward


def test_backends_use_only_the_backend_kit() -> None:
    outside = []
    for path in sorted((SRC / "backends").glob("*.py")):
        if path.stem == "remote":
            continue  # an upper layer, checked below
        for module, _ in _imports(path):
            parts = module.split(".")
            if parts[0] == "pipeserve" and len(parts) > 1 and parts[1] != "backends" and parts[1] not in BACKEND_KIT:
                outside.append(f"{path.name} -> {module}")
    assert not outside, outside


def test_upper_layers_use_only_public_names() -> None:
    import pipeserve

    exported = set(pipeserve.__all__)
    paths = [p for p in SRC.rglob("*.py") if _dotted(p).startswith(UPPER)]
    assert any(_dotted(p) == "cli" for p in paths)
    private = []
    for path in paths:
        own = _dotted(path).split(".")[0]
        for module, names in _imports(path):
            parts = module.split(".")
            if parts[0] != "pipeserve":
                continue
            if len(parts) == 1:
                private.extend(
                    f"{_dotted(path)} -> pipeserve.{n}" for n in names if n not in exported and n not in PUBLIC_MODULES
                )
            elif parts[1] not in PUBLIC_MODULES and parts[1] != own:
                private.append(f"{_dotted(path)} -> {module}")
    assert not private, private
