"""The torch backends' GPU path (NOTE [GPU path] in pipeserve.backends.torch): a CUDA stream per
instance, host-to-device copies from pinned memory on it, instances overlapping, casts.

Every test here needs a CUDA GPU and is skipped without one. Overlap is proven with CUDA events
recorded on each instance's stream, and the copies with the profiler's trace, never by timing."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from tests import torch_models  # noqa: E402
from tests.torch_models import make_conv, make_mlp  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

MLP = {"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "device": "cuda:0"}


def _streams(pipe: Any) -> set[int]:
    return {instance.backend.stream.cuda_stream for instance in pipe._nodes["main"].instances}  # white-box


def test_two_instances_run_on_their_own_streams_and_overlap(make_pipe: Any) -> None:
    """Each call of the model records CUDA events on the stream it runs on: both instances' own
    streams (never the default one), and two calls on different streams overlapped on the GPU."""
    torch_models.SLEEPY_CALLS.clear()
    config = {"backend": "TorchModule", "module": "tests.torch_models:make_sleepy", "device": "cuda:0"}
    pipe = make_pipe({**config, "instance_num": 2, "max": 1})
    streams = _streams(pipe)
    assert len(streams) == 2 and 0 not in streams
    items = [{"data": torch.full((1, 4), float(i))} for i in range(6)]
    for future in [pipe.submit(item) for item in items]:
        future.result(timeout=60)
    for i, item in enumerate(items):
        assert item["result"].is_cuda
        assert torch.equal(item["result"].cpu(), torch.full((1, 4), 2.0 * i))
    calls = list(torch_models.SLEEPY_CALLS)
    assert {stream for stream, _, _ in calls} == streams
    overlapping = [
        (a, b)
        for a in calls
        for b in calls
        if a[0] < b[0] and a[1].elapsed_time(b[2]) > 0 and b[1].elapsed_time(a[2]) > 0
    ]
    spans = [(s, round(start.elapsed_time(end), 3)) for s, start, end in calls]
    assert overlapping, f"no two calls on different streams overlapped: {spans}"


def _trace(tmp_path: Path, run: Any) -> list[dict[str, Any]]:
    """The profiler's GPU events (copies and kernels) while ``run()`` runs."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with warnings.catch_warnings():  # the profiler may warn about its own set-up
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=activities) as profile:
            run()
            torch.cuda.synchronize()
        path = tmp_path / "trace.json"
        profile.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    return [e for e in events if e.get("ph") == "X" and str(e.get("cat", "")).lower() in ("kernel", "gpu_memcpy")]


@pytest.mark.parametrize("pinned", [False, True], ids=["pageable", "pinned"])
def test_inputs_are_copied_from_pinned_memory_on_the_stream_of_the_model(
    make_pipe: Any, tmp_path: Path, pinned: bool
) -> None:
    """Pageable inputs are staged into pinned memory (one copy per batch); pinned ones are copied
    straight into their rows (one copy each). Either way every host-to-device copy is from pinned
    memory, on the stream where the model's kernels run."""
    pipe = make_pipe({**MLP, "max": 8})
    pipe({"data": torch.randn(1, 8)})  # warm-up: cuBLAS handles, kernels loaded
    rows = torch.randn(8, 8)
    items = [{"data": rows[i : i + 1].clone()} for i in range(8)]
    if pinned:
        items = [{"data": item["data"].pin_memory()} for item in items]
    before = sum(pipe.stats()["main"]["batch_sizes"].values())
    events = _trace(tmp_path, lambda: pipe(items))
    batches = sum(pipe.stats()["main"]["batch_sizes"].values()) - before
    copies = [e for e in events if str(e.get("name", "")).startswith("Memcpy HtoD")]
    kernels = [e for e in events if str(e.get("cat", "")).lower() == "kernel"]
    names = sorted({str(e.get("name")) for e in events})
    assert copies and kernels, f"no copies or kernels in the trace: {names}"
    assert all("Pinned" in e["name"] and "Pageable" not in e["name"] for e in copies), names
    assert len(copies) == (8 if pinned else batches), (len(copies), batches, names)
    streams = {e["args"]["stream"] for e in copies + kernels}
    assert len(streams) == 1, f"copies and kernels on streams {streams}"
    expected = make_mlp().cuda().eval()(rows.cuda()).detach()
    torch.testing.assert_close(torch.cat([item["result"] for item in items]), expected)


def test_pinned_staging_is_used_for_pageable_host_inputs(make_pipe: Any) -> None:
    """White-box: the batch of pageable rows is gathered into a pinned tensor, then copied."""
    pipe = make_pipe({**MLP, "max": 4})
    backend = pipe._nodes["main"].instances[0].backend
    seen: list[Any] = []
    original = backend.torch.empty

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def empty(*args: Any, **kwargs: Any) -> Any:
            tensor = original(*args, **kwargs)
            seen.append(tensor)
            return tensor

    backend.torch = Spy()
    try:
        rows = torch.randn(3, 8)
        items = [{"data": rows[i : i + 1]} for i in range(3)]
        pipe(items)
    finally:
        backend.torch = torch
    assert any(t.device.type == "cpu" and t.is_pinned() for t in seen), [(t.device, t.shape) for t in seen]
    torch.testing.assert_close(torch.cat([i["result"] for i in items]), make_mlp().cuda().eval()(rows.cuda()).detach())


def test_inputs_already_on_the_device_and_mixed_ones(make_pipe: Any) -> None:
    pipe = make_pipe({**MLP, "max": 4})
    rows = torch.randn(4, 8)
    items = [{"data": rows[0:1].cuda()}, {"data": rows[1:3].cuda()}, {"data": rows[3:4]}]
    pipe(items)
    expected = make_mlp().cuda().eval()(rows.cuda()).detach()
    torch.testing.assert_close(torch.cat([item["result"] for item in items]), expected)
    on_device = [{"data": rows[i : i + 1].cuda()} for i in range(4)]
    pipe(on_device)
    torch.testing.assert_close(torch.cat([item["result"] for item in on_device]), expected)


def test_half_precision_channels_last_matches_float32_on_the_cpu(make_pipe: Any) -> None:
    """``dtype = "float16"``, ``channels_last``: the model and floating inputs are cast on the
    GPU; results agree with float32 on the CPU within half precision (2e-2 here)."""
    pipe = make_pipe(
        {
            "backend": "TorchModule",
            "module": "tests.torch_models:make_conv",
            "device": "cuda:0",
            "dtype": "float16",
            "channels_last": True,
            "max": 4,
        }
    )
    images = torch.rand(4, 3, 16, 16)
    items = [{"data": images[i : i + 1].pin_memory()} for i in range(4)]
    pipe(items)
    result = torch.cat([item["result"] for item in items])
    assert result.dtype == torch.float16 and result.is_cuda
    with torch.inference_mode():
        expected = make_conv().eval()(images)
    torch.testing.assert_close(result.float().cpu(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("graphs", "instances"), [(False, 2), (True, 1)], ids=["eager", "cuda-graphs"])
def test_many_callers_get_their_own_rows(make_pipe: Any, graphs: bool, instances: int) -> None:
    """Eight threads, pinned and pageable inputs mixed, two eager instances or one replaying CUDA
    graphs: no row is mixed up or read before its copy finished (the staging and synchronisation
    of NOTE [GPU path], the padding of NOTE [CUDA graphs])."""
    pipe = make_pipe({**MLP, "max": 8, "instance_num": instances, "batching_timeout": 1, "cuda_graphs": graphs})
    model = make_mlp().cuda().eval()
    errors: list[str] = []

    def client(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for n in range(20):
            rows = torch.randn(1 + n % 3, 8, generator=generator)
            data = rows.pin_memory() if n % 2 else rows
            result = pipe({"data": data})["result"]
            with torch.inference_mode():
                expected = model(rows.cuda())
            if not torch.allclose(result, expected, rtol=1e-5, atol=1e-5):
                errors.append(f"client {seed} call {n}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors


def test_torch_wrapper_runs_its_stage_on_the_instance_stream(make_pipe: Any) -> None:
    """``Torch[X]`` runs X under the instance's stream and synchronises it afterwards."""
    import pipeserve as ps

    seen: list[int] = []

    @ps.register_backend("GpuStreamProbe", replace=True)
    class Probe(ps.Backend):
        def forward(self, items: list[dict[str, Any]]) -> None:
            seen.append(torch.cuda.current_stream().cuda_stream)
            for item in items:
                item["result"] = item["data"].cuda(non_blocking=True) * 3

    pipe = make_pipe({"backend": "Torch[GpuStreamProbe]", "device": "cuda:0", "instance_num": 2})
    item = pipe({"data": torch.ones(2, 2)})
    assert torch.equal(item["result"].cpu(), torch.full((2, 2), 3.0))
    assert seen and set(seen) <= _streams(pipe)


def test_cuda_graphs_are_captured_per_padded_batch_size_and_match_eager(make_pipe: Any) -> None:
    """NOTE [CUDA graphs]: batches of 1-8 rows replay graphs of 1, 2, 4 and 8 rows; a batch of
    more rows than ``max`` runs eagerly; results equal the eager model's (float32)."""
    pipe = make_pipe({**MLP, "max": 8, "cuda_graphs": True})
    graphs = pipe._nodes["main"].instances[0].backend.graphs  # white-box: what was captured
    model = make_mlp().cuda().eval()
    for rows in (1, 3, 8, 5, 2, 3, 12):
        x = torch.randn(rows, 8)
        result = pipe({"data": x})["result"]
        with torch.inference_mode():
            torch.testing.assert_close(result, model(x.cuda()), rtol=1e-5, atol=1e-5)
    assert sorted(key[0] for key in graphs.captured) == [1, 2, 4, 8]


def test_cuda_graphs_with_half_precision_channels_last(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "backend": "TorchModule",
            "module": "tests.torch_models:make_conv",
            "device": "cuda:0",
            "dtype": "float16",
            "channels_last": True,
            "cuda_graphs": True,
            "max": 4,
        }
    )
    images = torch.rand(3, 3, 16, 16)
    items = [{"data": images[i : i + 1].pin_memory()} for i in range(3)]
    pipe(items)
    with torch.inference_mode():
        expected = make_conv().eval()(images)
    torch.testing.assert_close(torch.cat([i["result"] for i in items]).float().cpu(), expected, rtol=2e-2, atol=2e-2)
