from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml_common.errors import ImageTooLarge, InvalidImage, UnsupportedMedia
from ml_common.images import decode_rgb, inspect_image


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.new("RGB", (40, 30), (10, 200, 30))


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("GIF", "gif")],
)
def test_formats_are_sniffed_from_content(fmt: str, ext: str) -> None:
    info = inspect_image(encode(RGB, fmt), 10_000)
    assert (info.ext, info.width, info.height) == (ext, 40, 30)


def test_rejections() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        inspect_image(b"", 100)
    with pytest.raises(UnsupportedMedia):
        inspect_image(b"GIF89a-but-not-really" * 3, 100)
    with pytest.raises(UnsupportedMedia):
        inspect_image(encode(RGB, "TIFF"), 10_000)
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_image(
            encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")[:800], 10**6
        )
    with pytest.raises(ImageTooLarge):
        inspect_image(encode(RGB, "PNG"), 100)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_rgb(encode(img, "JPEG", exif=exif), 10_000)
    assert decoded.size == (20, 60)


def test_modes_become_rgb() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))  # fully transparent blue
    assert decode_rgb(encode(rgba, "PNG"), 100).getpixel((0, 0)) == (255, 255, 255)
    cmyk = decode_rgb(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), 100)
    r, g, b = cmyk.getpixel((4, 4))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60
    grey16 = Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16))
    value = decode_rgb(encode(grey16, "PNG"), 100).getpixel((1, 1))
    assert value == (127, 127, 127)
    palette = decode_rgb(encode(RGB.convert("P"), "GIF"), 10_000)
    assert palette.mode == "RGB"
