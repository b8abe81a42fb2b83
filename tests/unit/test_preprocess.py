"""Input preparation: geometry, resizing, BGR normalisation (NanoDet), YOLOX's top-left input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ml_celery.detectors.preprocess import (
    BGR_MEAN,
    BGR_STD,
    ResizeMode,
    Source,
    letterbox_geometry,
    normalize_bgr_nchw,
    preprocess,
    resize_image,
    resized_size,
    shrink_linear,
    stretch_geometry,
    topleft_bgr_input,
)


def test_letterbox_geometry_fits_the_long_side_and_centres_the_short_one() -> None:
    geometry = letterbox_geometry(600, 400, 416)
    assert geometry.scale_x == pytest.approx(416 / 600)
    assert geometry.scale_y == pytest.approx(277 / 400)
    assert (geometry.pad_x, geometry.pad_y) == (0.0, 69.0)


def test_stretch_geometry_scales_each_axis() -> None:
    geometry = stretch_geometry(832, 208, 416)
    assert (geometry.scale_x, geometry.scale_y, geometry.pad_x, geometry.pad_y) == (
        0.5,
        2.0,
        0.0,
        0.0,
    )


@settings(deadline=None)  # timing varies on loaded CI machines; the result does not
@given(
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
    letterbox=st.booleans(),
)
def test_to_original_inverts_to_input(width: int, height: int, letterbox: bool) -> None:
    make = letterbox_geometry if letterbox else stretch_geometry
    geometry = make(width, height, 416)
    boxes = np.array(
        [[0, 0, width, height], [width / 3, height / 4, width / 2, height]], np.float32
    )
    np.testing.assert_allclose(
        geometry.to_original(geometry.to_input(boxes)), boxes, rtol=1e-4, atol=1e-2
    )


def test_letterboxed_image_lies_in_the_middle_on_black() -> None:
    rgb, geometry = resize_image(Image.new("RGB", (200, 100), (255, 255, 255)), 64, "letterbox")
    assert rgb.shape == (64, 64, 3)
    assert rgb.dtype == np.uint8
    assert geometry.pad_y == 16
    assert (rgb[:16] == 0).all()
    assert (rgb[48:] == 0).all()
    assert (rgb[16:48] == 255).all()


def test_a_thin_strip_keeps_at_least_one_row() -> None:
    rgb, geometry = resize_image(Image.new("RGB", (4000, 1), (255, 255, 255)), 416, "letterbox")
    assert geometry.scale_y == 1.0
    assert (rgb == 255).any(axis=2).sum() == 416


def test_stretched_image_fills_the_input() -> None:
    rgb, _ = resize_image(Image.new("RGB", (200, 100), (255, 255, 255)), 64, "stretch")
    assert (rgb == 255).all()


def test_normalisation_is_bgr_nchw() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30  # R, G, B
    tensor = normalize_bgr_nchw(rgb)
    assert tensor.shape == (1, 3, 2, 3)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    expected = (np.array([30, 20, 10], np.float32) - BGR_MEAN) / BGR_STD
    np.testing.assert_allclose(tensor[0, :, 1, 2], expected, rtol=1e-6)


def test_preprocess_accepts_any_mode() -> None:
    tensor, geometry = preprocess(Image.new("L", (50, 40), 128), 32, "letterbox")
    assert tensor.shape == (1, 3, 32, 32)
    assert (geometry.width, geometry.height) == (50, 40)


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_a_reduced_image_gives_the_originals_geometry_and_nearly_its_input(
    mode: ResizeMode,
) -> None:
    ramp = np.linspace(0, 255, 1600, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[np.newaxis, :], ramp[:1200, np.newaxis], 90.0), 2)
    full = Image.fromarray(rgb.astype(np.uint8))
    reduced = full.reduce(4)
    whole, expected = resize_image(full, 416, mode)
    part, geometry = resize_image(reduced, 416, mode, Source(1600, 1200, (0, 0, 400, 300)))
    assert geometry == expected
    assert resized_size(geometry) == ((416, 312) if mode == "letterbox" else (416, 416))
    assert np.abs(whole.astype(np.int16) - part).max() <= 2


def test_only_the_source_box_of_a_reduced_image_is_used() -> None:
    image = Image.new("RGB", (120, 100), (255, 255, 255))
    image.paste((0, 0, 0), (100, 0, 120, 100))  # columns beyond the original's edge
    rgb, _ = resize_image(image, 50, "stretch", Source(200, 200, (0, 0, 100, 100)))
    assert (rgb[:, :49] == 255).all()  # without the box, the last 8 columns would be black


def _gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose red channel is its x coordinate (mod 256), green 7, blue 200."""
    red = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    return Image.fromarray(np.dstack([red, np.full_like(red, 7), np.full_like(red, 200)]))


def test_topleft_input_is_bgr_at_the_top_left_with_its_padding() -> None:
    image = Image.new("RGB", (200, 100), (10, 20, 30))
    batch, geometry = topleft_bgr_input(image, 416, 114)
    assert batch.shape == (1, 3, 416, 416) and batch.dtype == np.float32
    assert resized_size(geometry) == (416, 208) and (geometry.pad_x, geometry.pad_y) == (0, 0)
    assert (batch[0, :, :208, :] == np.array([30, 20, 10]).reshape(3, 1, 1)).all()  # B, G, R
    assert (batch[0, :, 208:, :] == 114).all()


def test_shrink_linear_reads_the_box_with_pixel_centres_aligned() -> None:
    image = _gradient(256, 8)
    # the box's own size: each output pixel is the box's pixel, shifted by its left edge
    same = shrink_linear(image, (64.0, 0.0, 192.0, 8.0), 128, 8)
    assert same[0, :, 0].tolist() == list(range(64, 192))
    # half the size: each output pixel sits between two of the box's, so it is their mean
    half = shrink_linear(image, (0.0, 0.0, 256.0, 8.0), 128, 4)
    assert half[0, :, 0].tolist() == pytest.approx([2 * x + 0.5 for x in range(128)], abs=1)
    assert (half[:, :, 1] == 7).all() and (half[:, :, 2] == 200).all()


def test_shrink_linear_filters_beyond_twice_smaller() -> None:
    """Plain bilinear would skip pixels past a 2x shrink; Pillow's filter averages them."""
    stripes = np.zeros((8, 600, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: their mean is 127.5
    out = shrink_linear(Image.fromarray(stripes), (0.0, 0.0, 600.0, 8.0), 100, 2)
    assert out.mean() == pytest.approx(127.5, abs=3)
