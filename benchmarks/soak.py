"""Soak under faults (issue 13): a million requests through a 5-node graph while things go wrong.

The graph (backends and filter in ``benchmarks/soak_backends.py``)::

    pre (SoakSplit, 2 thread instances) -> fan (MapReduce over the parts) -> gate (SoakSum,
    filter SoakGate) -> post (SoakPost)
    fan's sub-graph: work (SoakWork, 2 process instances, isolate = false)

``--threads`` threads (64) send ``--requests`` requests (10^6), numbered; request ``n`` is
``{"data": n, "n": n}`` and everything that happens to it follows from ``n``:

- how it is sent: a blocking call (50 %), ``submit`` and a bounded wait on the Future (20 %),
  ``submit`` then ``Future.cancel()`` at once or after 0.2 ms (5 %), ``acall`` on the thread's own
  event loop (22.5 %), or ``acall`` whose task is cancelled after 0.2 ms (2.5 %);
- 10 % of the requests fail in a backend (``n % 10 == 7``: ValueError in ``pre``);
- 1 % get a deadline of 0.1-1 ms (``n % 100 == 42``): nearly all of them pass it;
- 2 % carry a 64 KiB numpy array to the process instances (shared memory both ways);
- 10 % skip the gate node (the filter);
- each worker process of ``work`` ends itself (``os._exit``) on every ``--kill-every``-th batch
  (2,000): the batch fails with WorkerDied and the next batch starts a new worker;
- once all but the last 0.5 % have been sent, the pipe is closed (``close()``, or
  ``close(drain=True)`` with ``--drain``) while the threads keep sending: what is queued or
  arrives then fails with PipeClosed.

Every call is bounded: a blocking call that takes longer than ``--hang-seconds`` (30 s), a Future
or task not done by then, or a thread that has not come back from its call once the run is over,
counts as a hang. Every request sent ends in exactly one bucket: ``ok`` (the result expected for
``n``), ``backend_error`` (the injected ValueError), ``worker_died``, ``timeout``, ``cancelled``,
``closed``, or the buckets that must stay empty: ``wrong_result``, ``unexpected`` (any other
error, or an injected one for the wrong ``n``) and ``hung``; ``lost`` is what no bucket holds.

Measured: resident memory (RSS) before the pipe, at the start of the load, half-way, and after
close; and after close, the pipeserve threads, extra threads, open file descriptors, child
processes and shared-memory blocks (``/dev/shm``, only those the pipe used: :class:`ShmLedger`)
left compared with before the pipe.

Targets (the exit code is 1 if any is missed): nothing lost, 0 hangs, no wrong result or
unexpected error, every admitted request finished (``pipe.pending == 0``), close within its
bound, RSS growth (start of the load to after close) < 50 MB, nothing left behind.

    .venv/bin/python benchmarks/soak.py                     # 10^6 requests, 64 threads
    .venv/bin/python benchmarks/soak.py --requests 20000 --threads 16 --kill-every 500

Results: ``benchmarks/results/soak.{txt,json}``; a run of fewer than 10^6 requests writes
``soak.tmp.{txt,json}`` (ignored by git). ``tests/test_soak.py`` runs a short profile.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pipeserve as ps
from pipeserve.process import pid_of

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script, it is already first; imported, it goes last
    sys.path.append(str(HERE))  # the worker processes find soak_backends there too (spawn copies sys.path)
import soak_backends as sb  # noqa: E402 - found through the line above

RESULTS = HERE / "results"
FULL_RUN = 1_000_000
MB = 1024 * 1024

# How a request is sent (from a hash of its number: independent of n % 10 and n % 100).
CALL, SUBMIT, CANCEL, ACALL, ACANCEL = "call", "submit", "submit+cancel", "acall", "acall+cancel"
KINDS = (CALL, SUBMIT, CANCEL, ACALL, ACANCEL)
CANCEL_AFTER = 0.0002  # seconds: half the cancelled submits and every cancelled acall wait this long
TIMEOUT_MOD = 42  # n % 100 == 42: a deadline of 0.1-1 ms

# The buckets every request ends in; the last three must stay empty.
BUCKETS = (
    "ok",
    "backend_error",
    "worker_died",
    "timeout",
    "cancelled",
    "closed",
    "wrong_result",
    "unexpected",
    "hung",
)


@dataclass(frozen=True)
class Profile:
    """What a soak run does (the command line's options)."""

    requests: int = FULL_RUN
    threads: int = 64
    seconds_limit: float = 1800.0  # stop sending (and close) if the run takes longer
    kill_every: int = 2000  # batches of one worker process between its deaths
    hang_seconds: float = 30.0  # a call not done after this long is a hang
    close_timeout: float = 10.0  # close()'s bound
    drain: bool = False  # close(drain=True) instead of close()
    rss_growth_mb: float = 50.0  # the target


def config(profile: Profile) -> dict[str, Any]:
    """The soak's pipe: five nodes, a MapReduce, a filter and a process-instance node."""
    return {
        "pre": {"backend": "SoakSplit", "instance_num": 2, "max": 16, "next": "fan"},
        "fan": {"backend": "MapReduce", "jump": "work", "split": "data", "merge": "result", "next": "gate"},
        "work": {
            "backend": "SoakWork",
            "instance_type": "process",
            "instance_num": 2,
            "max": 64,
            "isolate": False,  # a worker's death fails its whole batch (no item-by-item re-run)
            "kill_every": profile.kill_every,
        },
        "gate": {"backend": "SoakSum", "filter": "SoakGate", "max": 16, "next": "post"},
        "post": {"backend": "SoakPost", "max": 16},
    }


def plan(n: int) -> tuple[str, float | None]:
    """How request ``n`` is sent and its deadline in seconds (None: no deadline)."""
    u = ((n * 2654435761) & 0xFFFFFFFF) >> 8
    share = u % 1000
    if share < 500:
        kind = CALL
    elif share < 700:
        kind = SUBMIT
    elif share < 750:
        kind = CANCEL
    elif share < 975:
        kind = ACALL
    else:
        kind = ACANCEL
    timeout = 0.0001 * (1 + (u >> 10) % 10) if n % 100 == TIMEOUT_MOD else None
    return kind, timeout


def classify(n: int, error: BaseException) -> str:
    """The bucket of request ``n`` that failed with ``error``."""
    if isinstance(error, ps.WorkerDied):
        return "worker_died"
    if isinstance(error, ps.RequestTimeout):
        return "timeout"
    if isinstance(error, ps.PipeClosed):
        return "closed"
    if (
        isinstance(error, ps.BackendError)
        and isinstance(error.__cause__, ValueError)
        and "soak: injected failure" in str(error.__cause__)
        and sb.expected_total(n) is None
    ):
        return "backend_error"
    return "unexpected"


def judge(n: int, item: dict[str, Any]) -> str:
    """The bucket of request ``n`` that succeeded with ``item``."""
    expected = sb.expected_total(n)
    return "ok" if expected is not None and item.get("result") == expected else "wrong_result"


# ----------------------------------------------------------------------------- measurements
def rss_mb() -> float:
    """This process's resident memory in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_blocks() -> set[str]:
    """Python's shared-memory blocks (``psm_*``) in /dev/shm, whoever made them."""
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}
    except OSError:
        return set()


class ShmLedger:
    """The shared-memory blocks this process creates or opens while installed (a context
    manager): /dev/shm is the machine's, so a block left there only counts as the soak's if the
    soak's pipe used it. The process instances' arrays all pass through here: the parent creates
    the blocks of the inputs and opens those of the results, which the workers create.

    Its memory stays bounded: only the last ``RECENT`` names are kept, and an older one only if
    its block still exists when it drops out of them (a block that outlives so many newer ones
    is suspect), so that the soak measures pipeserve's memory rather than its own ledger's.
    """

    RECENT = 512

    def __init__(self) -> None:
        self.recent: dict[str, None] = {}
        self.suspects: set[str] = set()
        self.count = 0
        self.lock = threading.Lock()

    def add(self, name: str) -> None:
        with self.lock:
            self.count += 1
            self.recent[name] = None
            if len(self.recent) > self.RECENT:
                oldest = next(iter(self.recent))
                del self.recent[oldest]
                if os.path.exists(f"/dev/shm/{oldest}"):
                    self.suspects.add(oldest)

    @property
    def names(self) -> set[str]:
        """The names that may still have a block."""
        with self.lock:
            return set(self.recent) | self.suspects

    def __enter__(self) -> ShmLedger:
        from multiprocessing import shared_memory

        self.original = original = shared_memory.SharedMemory
        ledger = self

        class Recorded(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                ledger.add(self.name)

        shared_memory.SharedMemory = Recorded  # type: ignore[misc]
        return self

    def __exit__(self, *exc_info: object) -> None:
        from multiprocessing import shared_memory

        shared_memory.SharedMemory = self.original  # type: ignore[misc]


def child_processes() -> set[int]:
    """This process's children (zombies included)."""
    me = str(os.getpid())
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                children.add(int(entry))
    return children


@dataclass
class Snapshot:
    """What the process holds at one moment, to compare before the pipe and after close."""

    threads: set[int] = field(default_factory=set)
    fds: int = 0
    shm: set[str] = field(default_factory=set)
    children: set[int] = field(default_factory=set)

    @classmethod
    def take(cls) -> Snapshot:
        return cls({t.ident or 0 for t in threading.enumerate()}, open_fds(), shm_blocks(), child_processes())


def pipeserve_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("pipeserve"))


# ----------------------------------------------------------------------------- the load
class Soak:
    """One soak run: build the pipe, load it from ``profile.threads`` threads, close it under
    load, and account for every request (:meth:`run` returns the report)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.counter = itertools.count()
        self.stop = threading.Event()
        self.tallies: list[Counter[str]] = [Counter() for _ in range(profile.threads)]
        self.kinds: list[Counter[str]] = [Counter() for _ in range(profile.threads)]
        self.slowest = [0.0] * profile.threads
        self.unexpected: list[str] = []  # a few examples
        self.observed: Counter[str] = Counter()
        self.observed_lock = threading.Lock()
        self.pipe: ps.Pipe | None = None

    # ------------------------------------------------------------------ one request
    def one(self, n: int, loop: asyncio.AbstractEventLoop) -> tuple[str, str]:
        """Send request ``n``; its kind and its bucket."""
        pipe = self.pipe
        assert pipe is not None
        kind, timeout = plan(n)
        item: dict[str, Any] = {"data": n, "n": n}
        hang = self.profile.hang_seconds
        start = time.monotonic()
        try:
            if kind == CALL:
                pipe(item, timeout=timeout)
                bucket = judge(n, item)
            elif kind in (SUBMIT, CANCEL):
                future = pipe.submit(item, timeout=timeout)
                if kind == CANCEL:
                    if n % 2:
                        time.sleep(CANCEL_AFTER)
                    if future.cancel():
                        return kind, "cancelled"
                done, _ = concurrent.futures.wait([future], timeout=hang)
                bucket = judge(n, future.result()) if done else "hung"
            else:
                bucket = loop.run_until_complete(self.acall(n, item, timeout, kind == ACANCEL))
        except Exception as error:  # noqa: BLE001 - every error goes to a bucket
            bucket = classify(n, error)
            if bucket == "unexpected" and len(self.unexpected) < 10:
                self.unexpected.append(f"request {n} ({kind}): {type(error).__name__}: {error}")
        seconds = time.monotonic() - start
        if seconds > hang:
            bucket = "hung"  # it came back, but far too late
        return kind, bucket

    async def acall(self, n: int, item: dict[str, Any], timeout: float | None, cancel: bool) -> str:
        assert self.pipe is not None
        task = asyncio.ensure_future(self.pipe.acall(item, timeout=timeout))
        hang = self.profile.hang_seconds
        done, _ = await asyncio.wait({task}, timeout=CANCEL_AFTER if cancel else hang)
        if not done and cancel:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=hang)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
            return "hung"
        if task.cancelled():
            return "cancelled"
        return judge(n, task.result())

    def load(self, index: int) -> None:
        """One load thread: take request numbers until they run out (or the run is stopped)."""
        tally, kinds = self.tallies[index], self.kinds[index]
        loop = asyncio.new_event_loop()
        try:
            while not self.stop.is_set():
                n = next(self.counter)
                if n >= self.profile.requests:
                    break
                tally["sent"] += 1
                start = time.monotonic()
                kind, bucket = self.one(n, loop)
                self.slowest[index] = max(self.slowest[index], time.monotonic() - start)
                kinds[kind] += 1
                tally[bucket] += 1
        finally:
            loop.close()

    def observe(self, entry: str, seconds: float, error: BaseException | None) -> None:
        """The pipe's own account of each admitted request's outcome."""
        name = "ok" if error is None else type(error).__name__
        with self.observed_lock:
            self.observed[name] += 1

    def sent(self) -> int:
        return sum(t["sent"] for t in self.tallies)

    def worker_restarts(self) -> tuple[int, list[int]]:
        """Worker processes started after the first ones, and the workers' pids now."""
        assert self.pipe is not None
        restarts, pids = 0, []
        for instance in self.pipe._nodes["work"].instances:  # a benchmark may look inside
            restarts += getattr(instance.backend, "restarts", 0)
            pid = pid_of(instance.backend) if instance.backend is not None else None
            if pid is not None:
                pids.append(pid)
        return restarts, pids

    # ------------------------------------------------------------------ the run
    def run(self, progress: bool = False) -> dict[str, Any]:
        """Run the soak; the report (see :func:`report_text`)."""
        with ShmLedger() as ledger:
            return self._run(ledger, progress)

    def _run(self, ledger: ShmLedger, progress: bool) -> dict[str, Any]:
        profile = self.profile
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # Python's, for the shared blocks: started before the baseline
        gc.collect()
        before = Snapshot.take()
        rss = {"before": rss_mb()}
        built = time.monotonic()
        self.pipe = pipe = ps.pipe(config(profile))
        build_seconds = time.monotonic() - built
        pipe.add_observer(self.observe)
        worker_pids_start = self.worker_restarts()[1]
        rss["start"] = rss_mb()
        threads = [
            threading.Thread(target=self.load, args=(i,), name=f"soak-load-{i}", daemon=True)
            for i in range(profile.threads)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        close_at = profile.requests - max(8 * profile.threads, profile.requests // 200)
        middle = profile.requests // 2
        limit_hit = False
        last_print = started
        while True:
            sent = self.sent()
            now = time.monotonic()
            if "middle" not in rss and sent >= middle:
                rss["middle"] = rss_mb()
            if sent >= close_at:
                break
            if now - started > profile.seconds_limit:
                limit_hit = True
                break
            if progress and now - last_print >= 10:
                last_print = now
                rate = sent / (now - started)
                print(f"  {now - started:6.0f} s  {sent:>9,} sent  {rate:7,.0f}/s  RSS {rss_mb():.1f} MB", flush=True)
            time.sleep(0.005)
        rss.setdefault("middle", rss_mb())
        pending_at_close = pipe.pending
        sent_at_close = self.sent()
        restarts, worker_pids_end = self.worker_restarts()
        closing = time.monotonic()
        pipe.close(profile.close_timeout, drain=profile.drain)
        close_seconds = time.monotonic() - closing
        if limit_hit:
            self.stop.set()
        end = time.monotonic() + profile.hang_seconds + 5
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        load_seconds = time.monotonic() - started
        stuck = sum(thread.is_alive() for thread in threads)
        # Threads the pipe joined with a bound may still be on their way out: give them a moment.
        settle = time.monotonic() + 2
        while pipeserve_threads() and time.monotonic() < settle:
            time.sleep(0.01)
        restarts = max(restarts, self.worker_restarts()[0])
        gc.collect()
        rss["end"] = rss_mb()
        after = Snapshot.take()

        tally: Counter[str] = Counter()
        for counts in self.tallies:
            tally.update(counts)
        kinds: Counter[str] = Counter()
        for counts in self.kinds:
            kinds.update(counts)
        sent = tally["sent"]
        buckets = {name: tally[name] for name in BUCKETS}
        buckets["hung"] += stuck  # their requests were sent and have no bucket yet
        lost = sent - sum(buckets.values())
        stats = pipe.stats()
        left = {
            "pipeserve_threads": pipeserve_threads(),
            "extra_threads": len({t.ident or 0 for t in threading.enumerate()} - before.threads),
            "fds": after.fds - before.fds,
            "shm_blocks": sorted((after.shm - before.shm) & ledger.names),
            "child_processes": sorted(after.children - before.children),
        }
        growth = rss["end"] - rss["start"]
        targets = {
            "nothing lost": lost == 0 and pipe.pending == 0,
            "0 hangs": buckets["hung"] == 0,
            "no wrong result, no unexpected error": buckets["wrong_result"] == 0 and buckets["unexpected"] == 0,
            "all requests sent": sent == profile.requests and not limit_hit,
            "close within its bound": close_seconds <= profile.close_timeout + 5,
            f"RSS growth < {profile.rss_growth_mb:g} MB": growth < profile.rss_growth_mb,
            "nothing left behind": not left["pipeserve_threads"]
            and left["extra_threads"] <= 0
            and left["fds"] <= 0
            and not left["shm_blocks"]
            and not left["child_processes"],
        }
        return {
            "profile": asdict(profile),
            "sent": sent,
            "buckets": buckets,
            "lost": lost,
            "stuck_threads": stuck,
            "pending_after_close": pipe.pending,
            "kinds": dict(kinds),
            "observed": dict(self.observed),
            "unexpected_examples": self.unexpected,
            "build_seconds": round(build_seconds, 3),
            "load_seconds": round(load_seconds, 2),
            "requests_per_second": round(sent_at_close / max(closing - started, 1e-9), 1),
            "sent_at_close": sent_at_close,
            "pending_at_close": pending_at_close,
            "close_seconds": round(close_seconds, 3),
            "slowest_call_seconds": round(max(self.slowest), 3),
            "worker_restarts": restarts,
            "worker_pids": {"start": worker_pids_start, "before_close": worker_pids_end},
            "rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "rss_growth_mb": round(growth, 1),
            "left_after_close": left,
            "shm_blocks_used": ledger.count,
            "shm_blocks_of_other_processes": len(after.shm - before.shm - ledger.names),
            "before": {"threads": len(before.threads), "fds": before.fds},
            "nodes": {
                name: {k: node[k] for k in ("batches", "items", "errors", "expired", "dropped")}
                for name, node in stats.items()
            },
            "limit_hit": limit_hit,
            "targets": targets,
            "all_met": all(targets.values()),
        }


def run_soak(profile: Profile, progress: bool = False) -> dict[str, Any]:
    """Run one soak with ``profile``; its report."""
    return Soak(profile).run(progress=progress)


# ----------------------------------------------------------------------------- the report
def report_text(report: dict[str, Any]) -> str:
    """The report as the tables docs/benchmarks.md shows."""
    p = report["profile"]
    sent, buckets = report["sent"], report["buckets"]
    lines = [
        f"soak: {p['requests']:,} requests, {p['threads']} threads, a worker killed every {p['kill_every']:,} "
        f"of its batches, close({'drain=True' if p['drain'] else ''}) at {report['sent_at_close']:,} sent",
        f"load: {report['load_seconds']} s, {report['requests_per_second']:,} requests/s before close; "
        f"close took {report['close_seconds']} s ({report['pending_at_close']} pending then); "
        f"slowest call {report['slowest_call_seconds']} s",
        "",
        "| bucket | requests | share |",
        "|---|---|---|",
    ]
    for name in BUCKETS:
        lines.append(f"| {name} | {buckets[name]:,} | {100 * buckets[name] / max(sent, 1):.2f} % |")
    lines += [
        f"| **sent** | **{sent:,}** | lost: {report['lost']} |",
        "",
        "sent by kind: " + ", ".join(f"{k} {report['kinds'].get(k, 0):,}" for k in KINDS),
        "the pipe's own account (observer): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(report["observed"].items(), key=lambda kv: -kv[1])),
        f"worker restarts: {report['worker_restarts']}; pending after close: {report['pending_after_close']}; "
        f"shared-memory blocks used: {report['shm_blocks_used']:,}",
        "",
        "| RSS (MB) | before the pipe | start | middle | end (after close) | growth |",
        "|---|---|---|---|---|---|",
        "| | {before} | {start} | {middle} | {end} | {growth:+.1f} |".format(
            growth=report["rss_growth_mb"], **report["rss_mb"]
        ),
        "",
    ]
    left = report["left_after_close"]
    lines += [
        "left after close (against before the pipe): "
        f"pipeserve threads {len(left['pipeserve_threads'])}, other threads {left['extra_threads']}, "
        f"fds {left['fds']:+d}, shared-memory blocks {len(left['shm_blocks'])}, "
        f"child processes {len(left['child_processes'])}",
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {name} | {'yes' if met else '**no**'} |" for name, met in report["targets"].items()]
    if report["unexpected_examples"]:
        lines += ["", "unexpected errors (examples):", *report["unexpected_examples"]]
    if left["pipeserve_threads"]:
        lines += ["", "pipeserve threads left: " + ", ".join(left["pipeserve_threads"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=FULL_RUN)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds-limit", type=float, default=1800.0, help="stop sending and close after this long")
    parser.add_argument("--kill-every", type=int, default=2000, help="batches of a worker process between its deaths")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--close-timeout", type=float, default=10.0)
    parser.add_argument("--drain", action="store_true", help="close(drain=True) at the end")
    args = parser.parse_args(argv)
    profile = Profile(
        requests=args.requests,
        threads=args.threads,
        seconds_limit=args.seconds_limit,
        kill_every=args.kill_every,
        hang_seconds=args.hang_seconds,
        close_timeout=args.close_timeout,
        drain=args.drain,
    )
    from common import machine

    report = run_soak(profile, progress=True)
    report["machine"] = machine()
    text = report_text(report)
    text += f"machine: {report['machine']}\n"
    print(text, end="")
    RESULTS.mkdir(exist_ok=True)
    name = "soak" if profile.requests >= FULL_RUN else "soak.tmp"
    (RESULTS / f"{name}.txt").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
