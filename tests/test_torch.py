"""PyTorch backends on CPU (and on a GPU when one is present), against the module called directly."""

import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

import pipeserve as ps  # noqa: E402
from tests.torch_models import make_conv, make_mlp, make_two_heads  # noqa: E402

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_module_from_factory_batches_and_matches_a_direct_call(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "max": 8, "instance_num": 2})
    rows = torch.randn(5, 8)
    items = [{"data": rows[i : i + 1]} for i in range(4)] + [{"data": rows[4:5].numpy()}]
    pipe(items)
    with torch.inference_mode():
        expected = make_mlp()(rows)
    for i, item in enumerate(items):
        assert item["result"].shape == (1, 4)
        torch.testing.assert_close(item["result"], expected[i : i + 1])
    assert pipe.stats()["main"]["batch_sizes"] == {5: 1}


def test_torchscript_file_with_weights_and_several_inputs_outputs(tmp_path: Path, make_pipe: Any) -> None:
    module = make_two_heads().eval()
    path = tmp_path / "two.pt"
    example = (torch.randn(2, 4), torch.randn(2, 4))
    with warnings.catch_warnings():  # TorchScript is deprecated for new models, still loaded for old ones
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(module, example), str(path))
    pipe = make_pipe({"backend": "TorchScript", "model": str(path), "max": 4})
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    items = [{"data": [x[:2], y[:2]]}, {"data": [x[2:], y[2:]]}]
    pipe(items)
    with torch.inference_mode():
        linear, total = module(x, y)
    torch.testing.assert_close(torch.cat([items[0]["result"][0], items[1]["result"][0]]), linear)
    torch.testing.assert_close(items[1]["result"][1], total[2:])


def test_exported_program_with_a_dynamic_batch(tmp_path: Path, make_pipe: Any) -> None:
    module = make_mlp().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.randn(2, 8),), dynamic_shapes=({0: batch},))
    path = tmp_path / "mlp.pt2"
    torch.export.save(program, str(path))
    pipe = make_pipe({"backend": "TorchExport", "model": str(path), "max": 8})
    rows = torch.randn(3, 8)
    items = [{"data": rows[i : i + 1]} for i in range(3)]
    pipe(items)
    with torch.inference_mode():
        expected = module(rows)
    torch.testing.assert_close(torch.cat([i["result"] for i in items]), expected)


def test_state_dict_weights_are_loaded(tmp_path: Path, make_pipe: Any) -> None:
    trained = make_mlp()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.fill_(0.5)
    weights = tmp_path / "mlp.pt"
    torch.save(trained.state_dict(), str(weights))
    pipe = make_pipe({"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "weights": str(weights)})
    x = torch.ones(1, 8)
    torch.testing.assert_close(pipe({"data": x})["result"], trained(x).detach())


def test_torch_wrapper_passes_through_on_cpu(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "SyncTensor[TorchModule]", "module": "tests.torch_models:make_mlp", "max": 2})
    assert pipe.max() == 2
    assert pipe({"data": torch.randn(1, 8)})["result"].shape == (1, 4)


def test_errors_are_clear() -> None:
    with pytest.raises(ps.ConfigError, match=r"cannot import 'tests\.torch_models:nope'"):
        ps.pipe({"backend": "TorchModule", "module": "tests.torch_models:nope"})
    with pytest.raises(ps.ConfigError, match=r"expected 'package\.module:factory'"):
        ps.pipe({"backend": "TorchModule", "module": "nocolon"})
    with pytest.raises(ps.ConfigError, match="cannot load TorchScript"):
        ps.pipe({"backend": "TorchScript", "model": "/no/such/file.pt"})
    if not torch.cuda.is_available():
        with pytest.raises(ps.ConfigError, match="sees no CUDA GPU"):
            ps.pipe({"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "device": "cuda:0"})
    with ps.pipe({"backend": "TorchModule", "module": "tests.torch_models:make_mlp"}) as pipe:
        with pytest.raises(ps.BackendError, match=r"mat1 and mat2|shapes cannot be multiplied"):
            pipe({"data": torch.randn(1, 3)})


def test_dtype_and_channels_last_cast_the_model_and_its_inputs(make_pipe: Any) -> None:
    """``dtype`` casts the parameters once and floating inputs per batch; ``channels_last`` puts
    the model and 4-D inputs in channels-last order (the GPU path's speed-ups; same numbers here)."""
    config = {"backend": "TorchModule", "module": "tests.torch_models:make_conv", "max": 4}
    pipe = make_pipe({**config, "dtype": "float64", "channels_last": True})
    images = torch.rand(3, 3, 8, 8)
    items = [{"data": images[i : i + 1]} for i in range(3)]
    pipe(items)
    result = torch.cat([item["result"] for item in items])
    assert result.dtype == torch.float64
    with torch.inference_mode():
        expected = make_conv().double().eval()(images.double())
    torch.testing.assert_close(result, expected)
    conv = pipe._nodes["main"].instances[0].backend.model[0]  # white-box: the convolution's weights
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ps.ConfigError, match=r"key 'dtype': expected one of \['float16'"):
        ps.pipe({**config, "dtype": "half-ish"})
    with pytest.raises(ps.ConfigError, match="cuda_graphs needs a CUDA device"):
        ps.pipe({**config, "cuda_graphs": True})
    with pytest.raises(ps.ConfigError, match="cuda_graphs runs one instance per node"):
        ps.pipe({**config, "cuda_graphs": True, "instance_num": 2})


def test_rows_of_different_shapes_or_input_counts_fail_the_batch_clearly(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "max": 4, "isolate": False})
    with pytest.raises(ps.BackendError, match=r"differ in shape: rows of \[8\] and rows of \[7\]"):
        pipe([{"data": torch.ones(1, 8)}, {"data": torch.ones(1, 7)}])
    with pytest.raises(ps.BackendError, match="the same number of inputs"):
        pipe([{"data": torch.ones(1, 8)}, {"data": [torch.ones(1, 8), torch.ones(1, 8)]}])


@GPU
@pytest.mark.gpu
def test_on_a_gpu_each_instance_has_its_own_stream_and_results_are_ready(make_pipe: Any) -> None:
    pipe = make_pipe(
        {
            "backend": "TorchModule",
            "module": "tests.torch_models:make_mlp",
            "device": "cuda:0",
            "instance_num": 2,
            "max": 8,
        }
    )
    streams = {id(i.backend.stream) for i in pipe._nodes["main"].instances}
    assert len(streams) == 2
    rows = torch.randn(16, 8)
    items = [{"data": rows[i : i + 1]} for i in range(16)]
    pipe(items)
    expected = make_mlp().cuda().eval()(rows.cuda()).detach()
    for i, item in enumerate(items):
        assert item["result"].is_cuda
        torch.testing.assert_close(item["result"], expected[i : i + 1])


def test_cpu_instances_are_elastic_unless_threads_are_set() -> None:
    """NOTE [elastic budget]: each batch sets PyTorch's (process-wide) threads to the grant."""
    config = {"backend": "TorchModule", "module": "tests.torch_models:make_mlp", "instance_num": 2}
    before = torch.get_num_threads()
    try:
        with ps.pipe(config, budget=ps.CpuBudget(4)) as pipe:
            backend = pipe._nodes["main"].instances[0].backend  # white-box: the hook itself
            assert backend.max_threads() == 4
            assert backend.use_threads(3) == 3 and torch.get_num_threads() == 3
            pipe({"data": torch.ones(1, 8)})
            assert pipe.budget.statistics().grants >= 1
        with ps.pipe({**config, "torch_threads": 1}, budget=ps.CpuBudget(4)) as pipe:
            backend = pipe._nodes["main"].instances[0].backend
            assert backend.max_threads() == 1 and backend.use_threads(4) == 1
    finally:
        torch.set_num_threads(before)
