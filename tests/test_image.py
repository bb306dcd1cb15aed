"""Image backends against OpenCV called directly, on images generated here."""

from typing import Any

import pytest

np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")

import pipeserve as ps  # noqa: E402


def _image(height: int = 48, width: int = 64) -> Any:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.putText(image, "pipe", (2, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return image


def _png(image: Any) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def test_decode_matches_imdecode_and_tracks_colour(make_pipe: Any) -> None:
    image = _image()
    pipe = make_pipe({"backend": "DecodeMat", "max": 4})
    item = pipe({"data": _png(image)})
    np.testing.assert_array_equal(item["result"], image)  # PNG is lossless
    assert item["color"] == "bgr"
    _, jpeg = cv2.imencode(".jpg", image)
    direct = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(pipe({"data": jpeg.tobytes()})["result"], direct)


def test_undecodable_bytes_end_the_request_without_a_result(make_pipe: Any) -> None:
    pipe = make_pipe({"backend": "S[DecodeMat,ResizeMat]", "resize_h": 8, "resize_w": 8})
    item = pipe({"data": b"this is not an image"})
    assert "result" not in item
    truncated = _png(_image())[:40]
    assert "result" not in pipe({"data": truncated})


@pytest.mark.parametrize("data", [b"", "a string", 42, None])
def test_empty_or_non_bytes_input_is_an_error(make_pipe: Any, data: Any) -> None:
    pipe = make_pipe({"backend": "DecodeMat"})
    with pytest.raises(ps.BackendError, match="DecodeMat expects non-empty encoded image bytes") as info:
        pipe({"data": data})
    assert isinstance(info.value.__cause__, ps.InputError) and info.value.backend == "DecodeMat"


def test_resize_and_colour_conversion(make_pipe: Any) -> None:
    image = _image()
    pipe = make_pipe({"backend": "S[ResizeMat,cvtColorMat]", "resize_h": 20, "resize_w": 30, "color": "rgb"})
    item = pipe({"data": image})
    expected = cv2.cvtColor(cv2.resize(image, (30, 20), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(item["result"], expected)
    assert item["color"] == "rgb"
    again = make_pipe({"backend": "CvtColorMat", "color": "rgb"})({"data": expected, "color": "rgb"})
    np.testing.assert_array_equal(again["result"], expected)  # already rgb: unchanged


def test_resize_pad_keeps_aspect_and_records_the_inverse(make_pipe: Any) -> None:
    image = _image(48, 64)
    pipe = make_pipe({"backend": "ResizePadMat", "max_h": 32, "max_w": 32, "pad_value": 7})
    item = pipe({"data": image})
    result = item["result"]
    assert result.shape == (32, 32, 3)
    expected = cv2.resize(image, (32, 24), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(result[:24], expected)
    assert (result[24:] == 7).all()
    inverse = item["inverse_trans"]
    np.testing.assert_allclose(inverse @ np.array([32, 24, 1.0]), [64, 48])


def test_fix_height_resize_pad_for_text_lines(make_pipe: Any) -> None:
    line = _image(20, 100)
    pipe = make_pipe({"backend": "FixHResizePadMat", "resize_h": 10, "max_w": 80})
    result = pipe({"data": line})["result"]
    assert result.shape == (10, 80, 3)
    np.testing.assert_array_equal(result[:, :50], cv2.resize(line, (50, 10), interpolation=cv2.INTER_LINEAR))
    assert (result[:, 50:] == 0).all()
    too_wide = pipe({"data": _image(10, 400)})["result"]
    assert too_wide.shape == (10, 80, 3)  # width capped at max_w


def test_crop_clips_to_the_image(make_pipe: Any) -> None:
    image = _image()
    pipe = make_pipe({"backend": "CropMat"})
    np.testing.assert_array_equal(pipe({"data": image, "_box": [10, 5, 30, 25]})["result"], image[5:25, 10:30])
    np.testing.assert_array_equal(pipe({"data": image, "_box": [-5, -5, 8, 9]})["result"], image[0:9, 0:8])
    with pytest.raises(ps.BackendError, match="is empty"):
        pipe({"data": image, "_box": [30, 30, 10, 10]})


def test_perspective_transform_straightens_a_quadrilateral(make_pipe: Any) -> None:
    image = _image(60, 80)
    box = [[10, 10], [50, 12], [52, 30], [8, 28]]
    pipe = make_pipe({"backend": "PerspectiveTransformMat"})
    result = pipe({"data": image, "_box": box})["result"]
    quad = np.asarray(box, dtype=np.float32)
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    expected = cv2.warpPerspective(
        image,
        cv2.getPerspectiveTransform(quad, target),
        (width, height),
        borderMode=cv2.BORDER_REPLICATE,
        flags=cv2.INTER_CUBIC,
    )
    np.testing.assert_array_equal(result, expected)
    with pytest.raises(ps.BackendError, match="4 \\[x, y\\] points"):
        pipe({"data": image, "_box": [1, 2, 3, 4]})


def test_mat2tensor_layouts_and_normalisation(make_pipe: Any) -> None:
    image = _image(4, 5)
    chw = make_pipe({"backend": "Mat2Tensor"})({"data": image})["result"]
    assert chw.dtype == np.float32 and chw.shape == (3, 4, 5)
    np.testing.assert_array_equal(chw, image.transpose(2, 0, 1).astype(np.float32))
    pipe = make_pipe({"backend": "Mat2Tensor", "layout": "NCHW", "mean": "1,2,3", "std": "2,2,2"})
    nchw = pipe({"data": image})["result"]
    assert nchw.shape == (1, 3, 4, 5)
    expected = (image.transpose(2, 0, 1).astype(np.float32) - np.array([1, 2, 3]).reshape(3, 1, 1)) / 2
    np.testing.assert_allclose(nchw[0], expected, rtol=1e-6)


def test_image_chain_on_a_pipe_with_bad_input_beside_good(make_pipe: Any) -> None:
    image = _image()
    pipe = make_pipe(
        {
            "backend": "S[DecodeMat,ResizeMat,cvtColorMat,Mat2Tensor]",
            "resize_h": 16,
            "resize_w": 16,
            "color": "rgb",
            "max": 8,
            "instance_num": 2,
        }
    )
    items = [{"data": _png(image)}, {"data": b"garbage"}, {"data": _png(image)}]
    pipe(items)
    assert items[0]["result"].shape == (3, 16, 16) and "result" not in items[1]
    expected = cv2.cvtColor(cv2.resize(image, (16, 16)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(items[2]["result"], expected)


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ps.ConfigError, match="key 'color'"):
        ps.pipe({"backend": "cvtColorMat", "color": "hsv"})
    with pytest.raises(ps.ConfigError, match="key 'resize_h'"):
        ps.pipe({"backend": "ResizeMat", "resize_w": 4})
    with pytest.raises(ps.ConfigError, match="key 'layout'"):
        ps.pipe({"backend": "Mat2Tensor", "layout": "HWC"})
