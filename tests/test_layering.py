"""``import pipeserve`` is cheap: no optional dependency, no thread, no I/O."""

import subprocess
import sys

OPTIONAL = ["numpy", "cv2", "onnxruntime", "torch", "ray", "starlette", "uvicorn", "PIL"]


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
