"""The ONNX Runtime backend, on small models built here, against onnxruntime called directly."""

from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import pipeserve as ps  # noqa: E402


def _save(graph: Any, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def affine_model(path: Path, batch: Any = "N", features: Any = 4) -> str:
    """y = x @ W + b, W and b fixed random: float32 [batch, features] -> [batch, 3]."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], rng.standard_normal((4, 3)).astype(np.float32).ravel())
    b = helper.make_tensor("B", TensorProto.FLOAT, [3], rng.standard_normal(3).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[w, b],
    )
    return _save(graph, path)


def two_io_model(path: Path) -> str:
    """(a, b) -> (a + b, a * b), float32 [N, C, W] with W dynamic."""
    shape = ["N", 2, "W"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, shape),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("product", TensorProto.FLOAT, shape),
        ],
    )
    return _save(graph, path)


def images_model(path: Path) -> str:
    """Identity on float32 [N, 3, H, W]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "images",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    return _save(graph, path)


def direct(model: str, **feeds: Any) -> list[Any]:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_batches_over_the_first_dimension_and_matches_onnxruntime(tmp_path: Path, make_pipe: Any) -> None:
    model = affine_model(tmp_path / "affine.onnx")
    pipe = make_pipe({"backend": "Onnx", "model": model, "max": 8, "instance_num": 2})
    rows = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    items = [{"data": row} for row in rows[:4]] + [{"data": rows[4:6]}]  # the last carries a batch of 2
    pipe(items)
    expected = direct(model, x=rows)[0]
    for i in range(4):
        assert items[i]["result"].shape == (3,)
        np.testing.assert_allclose(items[i]["result"], expected[i], rtol=1e-5, atol=1e-6)
    assert items[4]["result"].shape == (2, 3)
    np.testing.assert_allclose(items[4]["result"], expected[4:6], rtol=1e-5, atol=1e-6)
    assert pipe.stats()["main"]["batch_sizes"] == {5: 1}


def test_several_inputs_and_outputs_in_model_order(tmp_path: Path, make_pipe: Any) -> None:
    model = two_io_model(tmp_path / "two.onnx")
    pipe = make_pipe({"backend": "OnnxRuntime", "model": model, "max": 4})
    a = np.arange(12, dtype=np.float32).reshape(2, 3, 2).transpose(0, 2, 1).copy()  # [2, 2, 3]
    b = np.full((2, 2, 3), 2.0, dtype=np.float32)
    item = pipe({"data": [a, b]})
    total, product = item["result"]
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(product, a * b)


def test_variable_widths_are_padded_to_the_batch_or_the_bucket_edge(tmp_path: Path, make_pipe: Any) -> None:
    model = images_model(tmp_path / "img.onnx")
    pipe = make_pipe({"backend": "Onnx", "model": model, "max": 4, "pad_value": -1})
    narrow = np.ones((3, 8, 10), dtype=np.float32)
    wide = np.ones((3, 8, 16), dtype=np.float32)
    items = [{"data": narrow}, {"data": wide}]
    pipe(items)
    assert items[0]["result"].shape == (3, 8, 16)  # padded to the widest of its batch
    assert (items[0]["result"][:, :, 10:] == -1).all() and (items[0]["result"][:, :, :10] == 1).all()
    bucketed = make_pipe(
        {"backend": "Onnx", "model": model, "max": 4, "bucket_key": "shape[2]", "bucket_edges": "32,64"}
    )
    item = bucketed({"data": narrow})
    assert item["_bucket_edge"] == 32 and item["result"].shape == (3, 8, 32)


def test_static_batch_sets_max_and_pads_short_batches(tmp_path: Path, make_pipe: Any) -> None:
    model = affine_model(tmp_path / "b4.onnx", batch=4)
    pipe = make_pipe({"backend": "Onnx", "model": model, "min": 1})
    assert pipe.max() == 4
    rows = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    items = [{"data": row} for row in rows]
    pipe(items)
    padded = np.concatenate([rows, rows[-1:]])
    expected = direct(model, x=padded)[0]
    for i, item in enumerate(items):
        np.testing.assert_allclose(item["result"], expected[i], rtol=1e-5, atol=1e-6)


def test_bucket_groups_load_one_model_each(tmp_path: Path, make_pipe: Any) -> None:
    b1 = affine_model(tmp_path / "b1.onnx", batch=1)
    b4 = affine_model(tmp_path / "b4.onnx", batch=4)
    pipe = make_pipe({"backend": "Onnx", "model": f"{b1}&{b4}", "min": "1&4", "max": "1&4", "inline": False})
    assert (pipe.min(), pipe.max()) == (1, 4)
    rows = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    items = [{"data": row} for row in rows]
    pipe(items)
    expected = direct(b4, x=rows[:4])[0]
    np.testing.assert_allclose(np.stack([i["result"] for i in items[:4]]), expected, rtol=1e-5, atol=1e-6)
    assert pipe.stats()["main"]["batch_sizes"] == {4: 1, 1: 1}


def test_mean_and_std_are_applied_before_the_model(tmp_path: Path, make_pipe: Any) -> None:
    model = images_model(tmp_path / "img.onnx")
    pipe = make_pipe({"backend": "Onnx", "model": model, "mean": "1,2,3", "std": "2,2,2"})
    x = np.ones((3, 2, 2), dtype=np.float32) * 5
    result = pipe({"data": x})["result"]
    np.testing.assert_allclose(result[:, 0, 0], [2.0, 1.5, 1.0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((4,), dtype=np.float64), "expects float32, got float64"),
        (np.zeros((5,), dtype=np.float32), r"expects shape \[N, 4\], got rows of \[5\]"),
        (np.zeros((1, 2, 4), dtype=np.float32), r"expects shape \[N, 4\] \(or one row of it\)"),
        ([np.zeros((4,), dtype=np.float32)] * 2, "takes 1 inputs"),
    ],
)
def test_bad_inputs_say_what_was_expected(tmp_path: Path, make_pipe: Any, data: Any, message: str) -> None:
    pipe = make_pipe({"onnx_node": {"backend": "Onnx", "model": affine_model(tmp_path / "a.onnx")}})
    with pytest.raises(ps.BackendError, match=message) as info:
        pipe({"data": data})
    assert info.value.node == "onnx_node" and info.value.backend == "Onnx"


def test_threads_follow_the_cpu_budget_and_bad_settings_fail_at_construction(tmp_path: Path) -> None:
    model = affine_model(tmp_path / "a.onnx")
    with ps.pipe({"backend": "Onnx", "model": model, "instance_num": 2}, cpu_count=4) as pipe:
        node = pipe._nodes["main"]  # white-box: the sessions' thread settings
        for instance in node.instances:
            assert instance.backend.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(ps.ConfigError, match="not available"):
        ps.pipe({"backend": "Onnx", "model": model, "providers": "NoSuchExecutionProvider"})
    with pytest.raises(ps.ConfigError, match="cannot load ONNX model"):
        ps.pipe({"backend": "Onnx", "model": str(tmp_path / "missing.onnx")})
    with pytest.raises(ps.ConfigError, match="key 'model': this key is required"):
        ps.pipe({"backend": "Onnx"})


# The GPU providers. No GPU build of onnxruntime can be tried here, nor carried to the GPU machine
# the project is lent at times, so these tests check the provider list the backend asks for, with
# onnxruntime told it has them and every session then opened on the CPU.
GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _pretend_gpu_providers(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Make onnxruntime list the GPU providers; return the provider lists sessions are asked with."""
    asked: list[list[str]] = []
    real = ort.InferenceSession

    def session(model: str, options: Any = None, providers: Any = None, **kwargs: Any) -> Any:
        asked.append(list(providers))
        return real(model, options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", *GPU_PROVIDERS])
    monkeypatch.setattr(ort, "InferenceSession", session)
    return asked


def test_gpu_providers_are_asked_for_in_order_when_onnxruntime_has_them(
    tmp_path: Path, make_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = affine_model(tmp_path / "a.onnx")
    asked = _pretend_gpu_providers(monkeypatch)
    pipe = make_pipe({"backend": "Onnx", "model": model, "max": 4})
    backend = pipe._nodes["main"].instances[0].backend  # white-box: the session's set-up
    assert asked == [GPU_PROVIDERS]  # TensorRT first, CUDA for what it cannot run, CPU last
    assert backend.providers == GPU_PROVIDERS and not backend.elastic  # one session: no CPU threads to widen
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    items = [{"data": x[0]}, {"data": x[1]}]
    pipe(items)
    np.testing.assert_allclose(np.stack([i["result"] for i in items]), direct(model, x=x)[0], rtol=1e-6)


def test_a_provider_list_is_taken_as_given(tmp_path: Path, make_pipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model = affine_model(tmp_path / "a.onnx")
    asked = _pretend_gpu_providers(monkeypatch)
    make_pipe({"backend": "Onnx", "model": model, "providers": "CUDAExecutionProvider, CPUExecutionProvider"})
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]


def test_gpu_providers_onnxruntime_lacks_are_refused_with_what_it_has(tmp_path: Path) -> None:
    model = affine_model(tmp_path / "a.onnx")
    missing = [p for p in GPU_PROVIDERS[:2] if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("this onnxruntime has the GPU providers")
    with pytest.raises(ps.ConfigError, match=r"not available; onnxruntime has \[.*'CPUExecutionProvider'"):
        ps.pipe({"backend": "Onnx", "model": model, "providers": ",".join(GPU_PROVIDERS)})
