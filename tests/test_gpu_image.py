"""The image backends' tensor path against their OpenCV path, on the CPU and (marked ``gpu``) on a
CUDA GPU: the same pixels give the same results within the tolerance the module states (colour
and ``Mat2Tensor`` exact to float32 rounding, ``ResizeMat`` within one grey level)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")

import pipeserve as ps  # noqa: E402

DEVICES = [
    "cpu",
    pytest.param(
        "cuda:0", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
    ),
]
SIZES = [(480, 640, 224, 224), (37, 53, 224, 300), (720, 960, 112, 112), (448, 672, 224, 336), (224, 224, 224, 224)]
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _image(height: int, width: int, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 2) if seed % 2 else noise  # rough and smooth pictures


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("height", "width", "out_h", "out_w"), SIZES)
def test_resize_matches_opencv_within_one_grey_level(
    make_pipe: Any, device: str, height: int, width: int, out_h: int, out_w: int
) -> None:
    pipe = make_pipe({"backend": "ResizeMat", "resize_h": out_h, "resize_w": out_w})
    for seed in (0, 1):
        image = _image(height, width, seed)
        tensor = pipe({"data": torch.from_numpy(image).to(device)})["result"]
        assert tensor.device.type == torch.device(device).type and tensor.dtype == torch.uint8
        assert tuple(tensor.shape) == (out_h, out_w, 3)
        difference = np.abs(tensor.cpu().numpy().astype(int) - pipe({"data": image})["result"].astype(int))
        assert difference.max() <= 1 and difference.mean() < 0.2, (difference.max(), difference.mean())


@pytest.mark.parametrize("device", DEVICES)
def test_resize_keeps_gray_and_float_images(make_pipe: Any, device: str) -> None:
    pipe = make_pipe({"backend": "ResizeMat", "resize_h": 20, "resize_w": 30})
    gray = _image(40, 50)[:, :, 0].copy()
    result = pipe({"data": torch.from_numpy(gray).to(device)})["result"]
    assert tuple(result.shape) == (20, 30)
    assert np.abs(result.cpu().numpy().astype(int) - cv2.resize(gray, (30, 20)).astype(int)).max() <= 1
    floats = _image(40, 50).astype(np.float32) / 255
    result = pipe({"data": torch.from_numpy(floats).to(device)})["result"]
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.cpu().numpy(), cv2.resize(floats, (30, 20)), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_colour_and_mat2tensor_are_exact(make_pipe: Any, device: str) -> None:
    colour = make_pipe({"backend": "cvtColorMat", "color": "rgb"})
    image = _image(30, 40)
    swapped = colour({"data": torch.from_numpy(image).to(device)})
    assert swapped["color"] == "rgb"
    assert np.array_equal(swapped["result"].cpu().numpy(), colour({"data": image})["result"])
    tensor = make_pipe({"backend": "Mat2Tensor", "mean": MEAN, "std": STD, "layout": "NCHW"})
    on_device = tensor({"data": torch.from_numpy(image).to(device)})["result"]
    assert on_device.device.type == torch.device(device).type and tuple(on_device.shape) == (1, 3, 30, 40)
    expected = tensor({"data": image})["result"]
    np.testing.assert_allclose(on_device.cpu().numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_preprocessing_chain_matches_the_opencv_chain(make_pipe: Any, device: str) -> None:
    """``Torch[S[ResizeMat,cvtColorMat,Mat2Tensor]]`` on tensors (on the instance's stream on a GPU,
    synchronised) against the same chain on arrays: within one grey level over ``std``."""
    keys = {"resize_h": 224, "resize_w": 224, "color": "rgb", "mean": MEAN, "std": STD, "layout": "NCHW"}
    on_tensors = make_pipe({"backend": "Torch[S[ResizeMat,cvtColorMat,Mat2Tensor]]", "device": device, **keys})
    on_arrays = make_pipe({"backend": "S[ResizeMat,cvtColorMat,Mat2Tensor]", **keys})
    for seed, (height, width) in enumerate([(480, 640), (360, 480), (100, 90)]):
        image = _image(height, width, seed)
        result = on_tensors({"data": torch.from_numpy(image).to(device), "color": "bgr"})["result"]
        expected = on_arrays({"data": image, "color": "bgr"})["result"]
        assert result.device.type == torch.device(device).type and tuple(result.shape) == (1, 3, 224, 224)
        assert np.abs(result.cpu().numpy() - expected).max() <= 1 / min(STD) + 1e-5


def test_a_host_tensor_is_moved_to_the_device_key_as_uint8(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "Mat2Tensor", "device": "cpu"})
    image = _image(8, 6)
    result = pipe({"data": torch.from_numpy(image)})["result"]
    assert tuple(result.shape) == (3, 8, 6) and result.dtype == torch.float32
    np.testing.assert_array_equal(result.numpy(), image.transpose(2, 0, 1).astype(np.float32))


def test_other_image_backends_name_the_tensor_path(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "CropMat"})
    with pytest.raises(ps.BackendError, match=r"expects an HWC image array.*tensors: ResizeMat"):
        pipe({"data": torch.zeros(4, 4, 3, dtype=torch.uint8), "_box": [0, 0, 2, 2]})
    colour = make_pipe({"backend": "cvtColorMat", "color": "rgb"})
    with pytest.raises(ps.BackendError, match="expects 3 channels"):
        colour({"data": torch.zeros(4, 4, 4, dtype=torch.uint8)})
