"""The worker's reduced decode: scale, EXIF rotation of the small image, RGB, original size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml_celery.decode import UPRIGHT, decode_for_model, transpose_box
from ml_common.errors import InvalidImage
from ml_common.images import decode_rgb


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose every region looks different: red grows left to right, green down."""
    x = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, np.newaxis].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 90)], axis=2).astype(np.uint8)
    return Image.fromarray(rgb)


def tagged(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def needs(width: int, height: int) -> tuple[int, int]:
    """A detector that needs a quarter of each side."""
    return width // 4, height // 4


@pytest.mark.parametrize("method", list(UPRIGHT.values()))
def test_transpose_box_follows_pillows_transpose(method: Image.Transpose) -> None:
    image = Image.new("L", (40, 30))
    image.paste(255, (3, 5, 11, 19))  # a marked box: x 3..11, y 5..19
    moved = image.transpose(method).getbbox()
    assert transpose_box((3, 5, 11, 19), image.size, method) == moved


def test_a_jpeg_is_decoded_at_the_smallest_dct_scale_that_covers_the_need() -> None:
    decoded = decode_for_model(encode(gradient(1600, 1200)), 10**8, needs)
    assert decoded.image.size == (400, 300)  # 1/4: 1/8 would be smaller than 400 x 300
    assert decoded.image.mode == "RGB"
    assert (decoded.source.width, decoded.source.height) == (1600, 1200)
    assert decoded.source.box == (0, 0, 400, 300)


def test_a_partial_last_block_is_left_out_of_the_box() -> None:
    decoded = decode_for_model(encode(gradient(1601, 1203)), 10**8, needs)
    assert decoded.image.size == (401, 301)
    assert decoded.source.box == (0, 0, 1601 / 4, 1203 / 4)


def test_needing_the_whole_image_decodes_it_as_decode_rgb_does() -> None:
    data = tagged(gradient(300, 200), 6)
    decoded = decode_for_model(data, 10**8, lambda w, h: (w, h))
    full = decode_rgb(data, 10**8)
    assert decoded.image.size == full.size == (200, 300)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(full))


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_rotation_is_applied_to_the_small_image(orientation: int) -> None:
    upright = gradient(1600, 1200)
    raw = upright.transpose(UPRIGHT[orientation])
    if orientation in (6, 8):  # ROTATE_90 and ROTATE_270 undo each other
        raw = upright.transpose(UPRIGHT[14 - orientation])
    decoded = decode_for_model(tagged(raw, orientation), 10**8, needs)
    assert (decoded.source.width, decoded.source.height) == (1600, 1200)
    assert decoded.image.size == (400, 300)
    expected = np.asarray(upright.reduce(4), dtype=np.int16)
    assert np.abs(np.asarray(decoded.image, dtype=np.int16) - expected).mean() < 3


def test_other_formats_are_reduced_by_whole_factors() -> None:
    decoded = decode_for_model(encode(gradient(1203, 900), "PNG"), 10**8, needs)
    assert decoded.image.size == (301, 225)
    assert decoded.source.box == (0, 0, 1203 / 4, 225)


def test_transparency_goes_onto_white_after_reducing() -> None:
    clear = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    decoded = decode_for_model(encode(clear, "PNG"), 10**8, needs)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((10, 10)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("P", (800, 600), 3), "GIF"),
        (Image.new("I;16", (800, 600), 65535), "PNG"),
        (Image.new("1", (800, 600), 1), "BMP"),
    ],
)
def test_modes_reduce_cannot_take_become_rgb_first(image: Image.Image, fmt: str) -> None:
    decoded = decode_for_model(encode(image, fmt), 10**8, needs)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (200, 150)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_jpegs_are_scaled_and_become_rgb(mode: str) -> None:
    decoded = decode_for_model(encode(gradient(1600, 1200).convert(mode)), 10**8, needs)
    assert (decoded.image.mode, decoded.image.size) == ("RGB", (400, 300))


def test_a_multi_picture_jpeg_is_its_first_picture_scaled() -> None:
    second = Image.new("RGB", (1600, 1200), (0, 0, 255))
    data = encode(gradient(1600, 1200), "MPO", save_all=True, append_images=[second])
    decoded = decode_for_model(data, 10**8, needs)
    assert decoded.image.size == (400, 300)
    red, _, blue = decoded.image.getpixel((399, 150))
    assert red > 200 and blue < 150  # the gradient, not the blue second picture


def test_a_truncated_jpeg_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_for_model(encode(gradient(800, 600))[:3000], 10**8, needs)
