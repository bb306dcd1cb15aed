"""pipeserve on a GPU: ResNet-50 through the torch backend, and the scheduler at GPU rates.

resnet    ResNet-50 (torchvision, ``weights=None``) in float16, channels-last, on ``cuda:0``. Each
          item is a 1x3x224x224 float16 tensor in pinned host memory; 64 closed-loop client
          threads call ``pipe(item)``. Batching off (``max = 1``) against on (``max`` 16 to 64,
          1 to 4 instances; eager, or with ``cuda_graphs``; one run with the interpreter's
          switch interval at 0.5 ms), and against the *ideal*: the model called back to back on one
          stream at its best batch size among 1-64 (inputs already on the device, the host
          enqueueing ahead; the same with the pinned copy in each call, and synchronising after
          each call, are reported beside it).
tiny      The scheduler at GPU rates: a model of about 1 ms per batch whatever its size (a spinning
          one-block kernel, then ``x * 2``), 64 clients, against the same ideal. Then where the
          time per request goes: the load generator alone, pipeserve on a no-op CPU backend, and
          the torch backend's own phases per batch (inputs, model launch, waiting for the stream).

Systems are interleaved within each repeat, in one process (a fresh process per run would pay
CUDA's start-up each time); medians of the repeats are reported.

    PYTHONPATH=src python benchmarks/gpu_resnet.py --repeats 3 --seconds 2 --json out.json

``--device cpu --model small`` runs the same code on the CPU with a small convolution instead of
ResNet-50 (a smoke test of the script; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

CLIENTS = 64
BATCHES = (1, 8, 16, 32, 64)
SPIN_CYCLES = "PIPESERVE_BENCH_SPIN_CYCLES"
MODEL = "PIPESERVE_BENCH_MODEL"


def model() -> torch.nn.Module:
    """The served model (a TorchModule factory): ResNet-50, or a small convolution (smoke test)."""
    if os.environ.get(MODEL, "resnet50") == "resnet50":
        import torchvision

        return torchvision.models.resnet50(weights=None)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


class Spin(torch.nn.Module):
    """About 1 ms of GPU time per call whatever the batch (one spinning thread block), then x * 2."""

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.cycles = cycles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            torch.cuda._sleep(self.cycles)
        return x * 2


def spin() -> torch.nn.Module:
    """The tiny model (a TorchModule factory); the cycles come from the calibration."""
    return Spin(int(os.environ.get(SPIN_CYCLES, "0")))


def calibrate_spin(device: str) -> int:
    """Cycles of ``torch.cuda._sleep`` that take 1 ms on this GPU (0 on the CPU)."""
    if device == "cpu":
        return 0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    torch.cuda._sleep(1000)
    for _ in range(3):
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
    return int(cycles / start.elapsed_time(end))


def ideal(
    net: torch.nn.Module,
    make: Callable[[int], torch.Tensor],
    device: str,
    seconds: float,
    cycles: int,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> dict[int, dict[str, float]]:
    """Items/s of ``net`` called back to back on one stream, per batch size: ``async`` (inputs on
    the device, the host enqueueing ahead, one wait every 64 calls), ``sync`` (a wait after each
    call, as a served batch does), ``copy`` (a pinned host batch copied in each call, waits as
    ``sync``); and ``gpu_ms``, the device time of one call alone (CUDA events, the calls queued
    behind a spinning kernel so that no host gap counts)."""
    cuda = device != "cpu"
    stream = torch.cuda.Stream() if cuda else None
    rates: dict[int, dict[str, float]] = {}
    for batch in BATCHES:
        host = make(batch)
        on_device = prepare(host.to(device))
        with torch.inference_mode(), torch.cuda.stream(stream) if cuda else _nothing():
            for _ in range(3):
                net(on_device)
            _wait(stream)
            row: dict[str, float] = {}
            for mode in ("async", "sync", "copy"):
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 3:
                    net(prepare(host.to(device, non_blocking=True)) if mode == "copy" else on_device)
                    if mode != "async" or calls % 64 == 63:
                        _wait(stream)
                    calls += 1
                _wait(stream)
                row[mode] = calls * batch / (time.perf_counter() - start)
            row["gpu_ms"] = _gpu_ms(net, on_device, stream, cycles) if cuda else 0.0
            row["gpu_bound"] = 1e3 * batch / row["gpu_ms"] if row["gpu_ms"] else 0.0
        rates[batch] = row
    return rates


def _gpu_ms(net: torch.nn.Module, x: torch.Tensor, stream: Any, cycles: int, calls: int = 3) -> float:
    """Device milliseconds of one call of ``net``: ``calls`` calls are queued behind a 50 ms
    spinning kernel (the launch queue holds them), so the events time the GPU's work alone."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(50 * cycles)
    start.record(stream)
    for _ in range(calls):
        net(x)
    end.record(stream)
    end.synchronize()
    return float(start.elapsed_time(end)) / calls


def _wait(stream: Any) -> None:
    if stream is not None:
        stream.synchronize()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def serve(config: dict[str, Any], items: list[torch.Tensor], seconds: float) -> dict[str, Any]:
    """64 closed-loop clients through a pipe of ``config``: throughput, latency, batching.
    ``_switch_ms`` in ``config`` sets the interpreter's switch interval for the run."""
    import pipeserve
    from pipeserve.bench import run_closed_loop

    config = dict(config)
    switch = config.pop("_switch_ms", None)
    before = sys.getswitchinterval()
    warmup = 1.5 if config.get("cuda_graphs") else 0.7  # the graphs of each padded size are captured first
    try:
        if switch is not None:
            sys.setswitchinterval(switch / 1e3)
        with pipeserve.pipe(config) as pipe:
            cpu = time.process_time()
            result = run_closed_loop(
                pipe, lambda i: {"data": items[i % len(items)]}, clients=CLIENTS, seconds=seconds, warmup=warmup
            )
            cpu = time.process_time() - cpu
            stats = pipe.stats()["main"]
    finally:
        sys.setswitchinterval(before)
    summary = result.summary()
    if result.errors:  # reported, not raised: the other systems' figures still come back
        print(f"  {result.errors} requests failed: {result.first_error}", flush=True)
        summary["first_error"] = result.first_error
    summary.update(mean_batch=stats["mean_batch_size"], cpu_us_per_request=1e6 * cpu / max(1, result.completed))
    return summary


def resnet(device: str, repeats: int, seconds: float, cycles: int) -> dict[str, Any]:
    net_keys = {"backend": "TorchModule", "module": "gpu_resnet:model", "device": device}
    if device != "cpu":
        net_keys.update(dtype="float16", channels_last=True)
    dtype = torch.float16 if device != "cpu" else torch.float32
    size = 224 if os.environ.get(MODEL, "resnet50") == "resnet50" else 64
    generator = torch.Generator().manual_seed(0)

    def make(batch: int) -> torch.Tensor:
        x = torch.rand(batch, 3, size, size, generator=generator).to(dtype)
        return x.pin_memory() if device != "cpu" else x

    net = model().to(device).to(dtype).eval()
    if device != "cpu":
        net = net.to(memory_format=torch.channels_last)
    rates = ideal(net, make, device, seconds, cycles, lambda x: x.contiguous(memory_format=torch.channels_last))
    del net
    best = max(rates, key=lambda b: rates[b]["async"])
    items = [make(1) for _ in range(CLIENTS)]
    systems = {
        "off (max 1, 4 instances)": {"max": 1, "instance_num": 4},
        "on (max 16, 4 instances)": {"max": 16, "instance_num": 4, "batching_timeout": 5},
        "on (max 32, 2 instances)": {"max": 32, "instance_num": 2, "batching_timeout": 5},
        "on (max 64, 1 instance)": {"max": 64, "instance_num": 1, "batching_timeout": 5},
        "on (max 64, 1, switch 0.5 ms)": {"max": 64, "instance_num": 1, "batching_timeout": 5, "_switch_ms": 0.5},
        "on (max 32, 2, graphs)": {"max": 32, "instance_num": 2, "batching_timeout": 5, "cuda_graphs": True},
        "on (max 64, 1, graphs)": {"max": 64, "instance_num": 1, "batching_timeout": 5, "cuda_graphs": True},
    }
    if device == "cpu":
        systems = {name: keys for name, keys in systems.items() if "cuda_graphs" not in keys}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for repeat in range(repeats):
        for name, keys in systems.items():
            runs[name].append(serve({**net_keys, **keys}, items, seconds))
            print(f"  resnet repeat {repeat + 1}: {name}: {runs[name][-1]['throughput']} items/s", flush=True)
    rows = {name: _median(result) for name, result in runs.items()}
    off = rows["off (max 1, 4 instances)"]["throughput"]
    best_on = max((r for n, r in rows.items() if n.startswith("on")), key=lambda r: r["throughput"])
    return {
        "ideal": {str(b): r for b, r in rates.items()},
        "best_batch": best,
        "ideal_items_s": rates[best]["async"],
        "rows": rows,
        "batching_speedup": best_on["throughput"] / off,
        "fraction_of_ideal": best_on["throughput"] / rates[best]["async"],
        "best_system": best_on["label"],
    }


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("throughput", "p50_ms", "p99_ms", "mean_batch", "cpu_us_per_request")
    merged = dict(results[0])
    merged.update({key: statistics.median(r[key] for r in results) for key in keys})
    merged["runs"] = [r["throughput"] for r in results]
    return merged


def tiny(device: str, repeats: int, seconds: float, cycles: int) -> dict[str, Any]:
    os.environ[SPIN_CYCLES] = str(cycles)
    keys = {"backend": "TorchModule", "module": "gpu_resnet:spin", "device": device}

    def make(batch: int) -> torch.Tensor:
        x = torch.rand(batch, 16)
        return x.pin_memory() if device != "cpu" else x

    rates = ideal(spin().to(device), make, device, seconds, cycles)
    best = max(rates, key=lambda b: rates[b]["async"])
    items = [make(1) for _ in range(CLIENTS)]
    systems = {
        "tiny (max 32, 2 instances)": {"max": 32, "instance_num": 2, "batching_timeout": 2},
        "tiny (max 64, 1 instance)": {"max": 64, "instance_num": 1, "batching_timeout": 2},
        "tiny (max 64, 1, graphs)": {"max": 64, "instance_num": 1, "batching_timeout": 2, "cuda_graphs": True},
    }
    if device == "cpu":
        systems = {name: keys for name, keys in systems.items() if "cuda_graphs" not in keys}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for repeat in range(repeats):
        for name, config in systems.items():
            runs[name].append(serve({**keys, **config}, items, seconds))
            print(f"  tiny repeat {repeat + 1}: {name}: {runs[name][-1]['throughput']} items/s", flush=True)
    rows = {name: _median(result) for name, result in runs.items()}
    best_row = max(rows.values(), key=lambda r: r["throughput"])
    return {
        "spin_cycles_per_ms": cycles,
        "ideal": {str(b): r for b, r in rates.items()},
        "best_batch": best,
        "ideal_items_s": rates[best]["async"],
        "rows": rows,
        "fraction_of_ideal": best_row["throughput"] / rates[best]["async"],
        "breakdown": breakdown({**keys, **systems["tiny (max 64, 1 instance)"]}, items, seconds),
    }


def breakdown(config: dict[str, Any], items: list[torch.Tensor], seconds: float) -> dict[str, Any]:
    """Where a request's time goes at GPU rates: the load generator alone (64 threads calling a
    function that returns at once), pipeserve on a no-op CPU backend (Identity, same batching),
    and the torch backend's phases per batch, timed inside its instances (white-box)."""
    import pipeserve
    from pipeserve.bench import run_closed_loop

    alone = run_closed_loop(lambda item: item, lambda i: {"data": i}, clients=CLIENTS, seconds=seconds, warmup=0.3)
    plain = {key: value for key, value in config.items() if key not in ("module", "device")}
    identity = serve({**plain, "backend": "Identity"}, items, seconds)
    phases: dict[str, list[float]] = {"forward": [], "inputs": [], "model": [], "wait": []}
    lock = threading.Lock()
    with pipeserve.pipe(config) as pipe:
        for instance in pipe._nodes["main"].instances:
            _time_phases(instance.backend, phases, lock)
        cpu = time.process_time()
        result = run_closed_loop(
            pipe, lambda i: {"data": items[i % len(items)]}, clients=CLIENTS, seconds=seconds, warmup=0.7
        )
        cpu = time.process_time() - cpu
        stats = pipe.stats()["main"]
    batches = len(phases["forward"])
    per_batch = {name: 1e3 * sum(values) / max(1, len(values)) for name, values in phases.items()}
    per_batch["batch"] = stats["mean_batch_size"]
    return {
        "loadgen_alone_requests_s": alone.throughput,
        "identity_cpu_requests_s": identity["throughput"],
        "identity_cpu_us_per_request": identity["cpu_us_per_request"],
        "torch_requests_s": result.throughput,
        "torch_cpu_us_per_request": 1e6 * cpu / max(1, result.completed),
        "torch_batches": batches,
        "torch_ms_per_batch": per_batch,
    }


def _time_phases(backend: Any, phases: dict[str, list[float]], lock: threading.Lock) -> None:
    """Wrap ``backend``'s forward and its steps with wall-clock timers (white-box)."""

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                with lock:
                    phases[name].append(time.perf_counter() - start)

        return wrapper

    backend.forward = timed("forward", backend.forward)
    backend._batch = timed("inputs", backend._batch)
    backend.model = timed("model", backend.model)
    backend.synchronise = timed("wait", backend.synchronise)


def report(results: dict[str, Any]) -> str:
    lines = [f"device {results['device']}, torch {results['torch']}, python {results['python']}"]
    for part in ("resnet", "tiny"):
        if part not in results:
            continue
        data = results[part]
        lines.append(f"\n{part}: ideal {data['ideal_items_s']:.0f} items/s at batch {data['best_batch']}")
        for batch, row in data["ideal"].items():
            lines.append(
                f"  ideal b={batch:>3}: async {row['async']:9.0f}  sync {row['sync']:9.0f}  "
                f"copy {row['copy']:9.0f} items/s  gpu {row['gpu_ms']:.3f} ms/call ({row['gpu_bound']:.0f} items/s)"
            )
        lines.append(f"  {'system':<30} {'items/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'cpu us/req':>10}")
        for name, row in data["rows"].items():
            lines.append(
                f"  {name:<30} {row['throughput']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}"
                f" {row['mean_batch']:6.1f} {row['cpu_us_per_request']:10.1f}"
            )
        if part == "resnet":
            lines.append(f"  batching speed-up {data['batching_speedup']:.2f}x (target >= 5x)")
        lines.append(f"  fraction of ideal {data['fraction_of_ideal']:.3f} (target >= 0.90)")
        if "breakdown" in data:
            lines.append(f"  breakdown: {json.dumps(data['breakdown'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--model", choices=["resnet50", "small"], default="resnet50")
    parser.add_argument("--parts", default="resnet,tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ[MODEL] = args.model
    import platform

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "model": args.model,
        "seconds": args.seconds,
        "repeats": args.repeats,
    }
    cycles = calibrate_spin(args.device)
    for part in args.parts.split(","):
        started = time.perf_counter()
        results[part] = {"resnet": resnet, "tiny": tiny}[part](args.device, args.repeats, args.seconds, cycles)
        results[part]["wall_s"] = round(time.perf_counter() - started, 1)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
    print(report(results), flush=True)


if __name__ == "__main__":
    main()
