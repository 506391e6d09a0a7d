"""The one preprocessing path: decode, resize short side, center crop, normalize, NCHW."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from modules.accelerators.model_store import Preprocessing
from modules.accelerators.preprocess import ImageError, decode_rgb, preprocess

from .helpers import write_image


def test_output_is_nchw_float32_of_crop_size() -> None:
    x = preprocess(data.coffee(), Preprocessing())
    assert x.shape == (1, 3, 224, 224)
    assert x.dtype == np.float32


def test_png_path_bytes_and_array_give_the_same_tensor(tmp_path: Path) -> None:
    rgb = data.chelsea()
    png = write_image(tmp_path / "cat.png", rgb)
    spec = Preprocessing()
    from_path = preprocess(png, spec)
    from_bytes = preprocess(png.read_bytes(), spec)
    from_array = preprocess(rgb, spec)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_array)  # PNG is lossless: RGB order kept


def test_jpeg_is_decoded_in_rgb_order(tmp_path: Path) -> None:
    red = np.zeros((300, 400, 3), np.uint8)
    red[..., 0] = 255
    rgb = decode_rgb(write_image(tmp_path / "red.jpg", red))
    assert rgb[150, 200, 0] > 240 and rgb[150, 200, 2] < 15


def test_short_side_resize_and_center_crop() -> None:
    # A wide image whose left and right thirds are black and middle is white: after resizing the
    # short side to 256 (width 768) the centered 224 crop is entirely white.
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255
    spec = Preprocessing(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = preprocess(img, spec)
    assert x.shape == (1, 3, 224, 224)
    assert x.min() >= 250.0


def test_normalization_and_channel_order() -> None:
    img = np.zeros((256, 256, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    spec = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1.0)
    x = preprocess(img, spec)
    assert [float(x[0, c, 0, 0]) for c in range(3)] == [10.0, 20.0, 30.0]
    bgr = preprocess(img, spec.model_copy(update={"channel_order": "BGR"}))
    assert [float(bgr[0, c, 0, 0]) for c in range(3)] == [30.0, 20.0, 10.0]
    imagenet = preprocess(img, Preprocessing())
    assert imagenet[0, 0, 0, 0] == pytest.approx((10 / 255 - 0.485) / 0.229, rel=1e-5)
    nhwc = preprocess(img, spec.model_copy(update={"layout": "NHWC"}))
    assert nhwc.shape == (1, 224, 224, 3)


def test_gray_and_rgba_inputs_become_three_channels(tmp_path: Path) -> None:
    gray = data.camera()
    assert preprocess(gray, Preprocessing()).shape == (1, 3, 224, 224)
    rgba = np.dstack([data.coffee(), np.full(data.coffee().shape[:2], 255, np.uint8)])
    assert preprocess(rgba, Preprocessing()).shape == (1, 3, 224, 224)
    gray_png = tmp_path / "gray.png"
    cv2.imwrite(str(gray_png), gray)
    assert preprocess(gray_png, Preprocessing()).shape == (1, 3, 224, 224)


def test_undecodable_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a decodable image"):
        preprocess(b"definitely not a jpeg", Preprocessing())
    truncated = tmp_path / "empty.jpg"
    truncated.write_bytes(b"")
    with pytest.raises(ImageError):
        preprocess(truncated, Preprocessing())
    with pytest.raises(ImageError, match="cannot read"):
        preprocess(tmp_path / "missing.jpg", Preprocessing())
