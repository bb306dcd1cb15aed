"""Backends for the process-instance tests, registered on import (the workers import this too)."""

import os
from typing import Any

import pipeserve as ps


def count_primes(limit: int) -> int:
    """Pure-Python CPU work that holds the GIL."""
    count = 0
    for n in range(2, limit):
        for d in range(2, int(n**0.5) + 1):
            if n % d == 0:
                break
        else:
            count += 1
    return count


@ps.register_backend("PrimesForProcessTest", replace=True)
class Primes(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if item["data"] == "crash":
                os._exit(3)
            if item["data"] == "fail":
                raise KeyError("asked to fail")
            item["result"] = count_primes(int(item["data"]))
            item["pid"] = os.getpid()
            item.pop("scratch", None)


@ps.register_backend("ArraysForProcessTest", replace=True)
class Arrays(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["result"] = item["data"] * 2
            item["small"] = item["data"][:2].copy()


@ps.register_backend("PartialForProcessTest", replace=True)
class Partial(ps.Backend):
    def forward(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["result"] = item["data"]
        raise ps.PartialFailure(
            {i: ValueError(f"odd {item['data']}") for i, item in enumerate(items) if item["data"] % 2}
        )


# ----------------------------------------------------------------- boundaries (tests/test_boundaries.py)
def refuse_to_unpickle() -> Any:
    raise ValueError("this value cannot be unpickled here")


class UnpicklableOnArrival:
    """Pickles fine, but raises when unpickled (in the other process)."""

    def __reduce__(self) -> Any:
        return (refuse_to_unpickle, ())


class RaisesOSErrorWhenPickled:
    """Pickling it raises an OSError (as an object holding a failing resource may)."""

    def __reduce__(self) -> Any:
        raise OSError("cannot pickle this resource")


class TwoArgsError(Exception):
    """An exception that pickles but cannot be unpickled: ``__init__`` wants two arguments and
    ``args`` holds one (a common way to write a custom exception)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def record_shared_memory(path: str) -> None:
    """Append the name of every shared-memory block this process creates or opens to ``path``
    (/dev/shm is shared with every other process of the machine: names tell ours apart)."""
    from multiprocessing import shared_memory

    original = shared_memory.SharedMemory.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        with open(path, "a") as file:
            file.write(self.name + "\n")

    shared_memory.SharedMemory.__init__ = init  # type: ignore[method-assign]


@ps.register_backend("BoundaryForProcessTest", replace=True)
class Boundary(ps.Backend):
    """``result = data * 2`` for numbers and arrays; a string ``data`` asks for something else:

    * ``"lambda"`` / ``"lock"``: a result that cannot be pickled back to the parent;
    * ``"unpicklable-result"``: a result that pickles but cannot be unpickled in the parent;
    * ``"partial-two-args"``: a PartialFailure whose exception cannot be unpickled in the parent;
    * ``"raise:<name>"``: raise the builtin exception ``<name>`` (SystemExit, KeyboardInterrupt...);
    * ``"block"``: create the file ``item["marker"]`` and sleep until killed, unless it exists.

    ``big_output`` in an item adds a 1 MiB array output (shared memory on the way back). Every item
    gets ``pid`` and ``batch`` (the size of the batch it ran in). Parameters: ``exit_in_init``
    (comma-separated instance indices whose ``init`` exits the process at once, code 5),
    ``exit_in_init_if`` (a path: ``init`` exits, code 6, while it exists), ``raise_in_init`` (a
    builtin exception's name, raised by ``init``), ``record_shm`` (a path: see
    :func:`record_shared_memory`), ``init_seconds`` (how long ``init`` takes: a model loading).
    """

    def init(self, params: Any, options: ps.Options) -> None:
        import builtins

        super().init(params, options)
        if params.get("record_shm"):
            record_shared_memory(str(params["record_shm"]))
        doomed = [int(i) for i in str(params.get("exit_in_init", "")).split(",") if i.strip()]
        if options.instance in doomed:
            os._exit(5)
        if params.get("exit_in_init_if") and os.path.exists(str(params["exit_in_init_if"])):
            os._exit(6)
        if params.get("init_seconds"):
            import time

            time.sleep(float(params["init_seconds"]))
        if params.get("raise_in_init"):
            raise getattr(builtins, str(params["raise_in_init"]))()

    def max(self) -> int:
        return 8

    def forward(self, items: list[dict[str, Any]]) -> None:
        import builtins
        import threading
        import time

        failures: dict[int, BaseException] = {}
        for index, item in enumerate(items):
            data = item["data"]
            item["pid"], item["batch"] = os.getpid(), len(items)
            if item.get("big_output"):
                import numpy as np

                item["array"] = np.ones(1 << 18, dtype=np.float32)
            if not isinstance(data, str):
                item["result"] = data * 2
            elif data == "lambda":
                item["result"] = lambda: None
            elif data == "lock":
                item["result"] = threading.Lock()
            elif data == "unpicklable-result":
                item["result"] = UnpicklableOnArrival()
            elif data == "partial-two-args":
                failures[index] = TwoArgsError(7, "refused")
            elif data.startswith("raise:"):
                raise getattr(builtins, data.removeprefix("raise:"))()
            elif data == "block":
                marker = str(item["marker"])
                if not os.path.exists(marker):
                    with open(marker, "w") as file:
                        file.write(str(os.getpid()))
                    time.sleep(120)  # until the test kills this process
                item["result"] = "unblocked"
        if failures:
            raise ps.PartialFailure(failures)
