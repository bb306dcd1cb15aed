"""``instance_type = "process"``: worker processes, shared-memory arrays, crash recovery."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pipeserve as ps
from tests import proc_backends

np = pytest.importorskip("numpy")

BASE = {"instance_type": "process", "imports": "tests.proc_backends"}


def test_items_run_in_worker_processes_and_keys_flow_back(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "PrimesForProcessTest", "instance_num": 2, "max": 4, **BASE})
    items = [{"data": 200 + i, "scratch": 1, "kept": i} for i in range(6)]
    pipe(items)
    for i, item in enumerate(items):
        assert item["result"] == proc_backends.count_primes(200 + i)
        assert item["pid"] != os.getpid() and item["kept"] == i
        assert "scratch" not in item  # removed by the backend, removed here too
    assert len({item["pid"] for item in items}) >= 1


def test_large_arrays_travel_through_shared_memory_both_ways(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "ArraysForProcessTest", **BASE})
    big = np.arange(100_000, dtype=np.float64)  # 800 kB: shared memory
    small = np.arange(10, dtype=np.float64)  # pickled
    for data in (big, small):
        item = pipe({"data": data})
        np.testing.assert_array_equal(item["result"], data * 2)
        np.testing.assert_array_equal(item["small"], data[:2])
        assert item["data"] is data  # unchanged keys are not replaced by copies


def test_exceptions_come_back_as_themselves(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "PrimesForProcessTest", "max": 4, **BASE})
    with pytest.raises(ps.BackendError) as info:
        pipe({"data": "fail"})
    assert isinstance(info.value.__cause__, KeyError)
    items = [{"data": 11}, {"data": "fail"}, {"data": 13}]
    with pytest.raises(ps.BackendError):
        pipe(items)
    assert items[0]["result"] == 4 and items[2]["result"] == 5  # isolated re-runs
    partial = make_pipe({"backend": "PartialForProcessTest", "max": 4, **BASE})
    futures = [partial.submit({"data": i}) for i in range(4)]
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=30)["result"])
        except ps.BackendError as error:
            outcomes.append(type(error.__cause__).__name__)
    assert outcomes == [0, "ValueError", 2, "ValueError"]


def test_a_dead_worker_fails_its_batch_clearly_and_is_restarted(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "PrimesForProcessTest", **BASE})
    first = pipe({"data": 50})["pid"]
    with pytest.raises(ps.BackendError, match=r"worker process of instance 0 died \(exit code 3\)"):
        pipe({"data": "crash"})
    after = pipe({"data": 50})
    assert after["result"] == proc_backends.count_primes(50) and after["pid"] != first


def test_configuration_errors_in_the_worker_are_reported(make_pipe: Any) -> None:
    with pytest.raises(ps.ConfigError, match=r"key .imports.: cannot import .no_such_module_xyz."):
        ps.pipe(
            {"backend": "Identity", "instance_type": "process", "imports": "tests.proc_backends,no_such_module_xyz"}
        )
    with pytest.raises(ps.ConfigError, match="key 'instance_type'"):
        ps.pipe({"backend": "Identity", "instance_type": "fiber"})


def test_a_backend_failing_to_initialise_in_its_worker_is_reported(make_pipe: Any) -> None:
    with pytest.raises(ps.ConfigError, match="failed to initialise in its process"):
        ps.pipe({"backend": "ResizeMat", "instance_type": "process", "resize_h": 4})  # no resize_w


# ----------------------------------------------------------------- backends registered anywhere
@ps.register_backend("ProcessTestHere", replace=True)
class RegisteredHere(ps.Backend):
    """Registered in this test module, which no ``imports`` key names."""

    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["result"] = (item["data"], os.getpid())


def test_a_backend_registered_in_the_callers_module_needs_no_imports(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "S[ProcessTestHere]", "instance_type": "process"})
    value, pid = pipe({"data": 5})["result"]
    assert value == 5 and pid != os.getpid()


def test_a_backend_from_a_script_works_in_worker_processes(tmp_path: Any) -> None:
    script = tmp_path / "serve_me.py"
    script.write_text(
        "import os, pipeserve as ps\n"
        "@ps.register_backend('FromTheScript')\n"
        "def from_script(items):\n"
        "    return [(item['data'] * 2, os.getpid()) for item in items]\n"
        "if __name__ == '__main__':\n"
        "    with ps.pipe({'backend': 'FromTheScript', 'instance_type': 'process'}) as pipe:\n"
        "        value, pid = pipe({'data': 21})['result']\n"
        "        print(value, pid != os.getpid())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    argv = [sys.executable, str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["42", "True"]


def test_an_interactively_defined_backend_is_refused_with_what_to_do(monkeypatch: Any) -> None:
    import types

    interactive = types.ModuleType("__main__")  # a REPL's or a notebook's: no __file__
    monkeypatch.setitem(sys.modules, "__main__", interactive)

    def cell_backend(items: list[dict[str, Any]]) -> list[Any]:
        return [item["data"] for item in items]

    cell_backend.__module__ = "__main__"
    ps.register_backend(cell_backend, "ProcessTestCell", replace=True)
    with pytest.raises(ps.ConfigError, match="interactive session"):
        ps.pipe({"backend": "ProcessTestCell", "instance_type": "process"})
