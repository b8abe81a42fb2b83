from __future__ import annotations

import io
import random
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ml_common import jpegscan
from ml_common.errors import (
    ExtremeAspectRatio,
    ImageTooLarge,
    InvalidImage,
    MLProdError,
    UnsupportedMedia,
)
from ml_common.images import ImageLimits, decode_rgb, inspect_image
from ml_common.jpegscan import check_jpeg
from ml_common.settings import Settings


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.new("RGB", (40, 30), (10, 200, 30))
NOISE = Image.effect_noise((200, 120), 50).convert("RGB")


def limits(max_pixels: int = 10**6, max_side: int = 10_000, aspect: float = 20) -> ImageLimits:
    return ImageLimits(max_pixels, max_side, aspect)


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("GIF", "gif")],
)
def test_formats_are_sniffed_from_content(fmt: str, ext: str) -> None:
    info = inspect_image(encode(RGB, fmt), limits())
    assert (info.ext, info.width, info.height) == (ext, 40, 30)


def test_rejections() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        inspect_image(b"", limits())
    with pytest.raises(UnsupportedMedia):
        inspect_image(b"GIF89a-but-not-really" * 3, limits())
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_image(encode(NOISE, "JPEG")[:800], limits())
    with pytest.raises(ImageTooLarge):
        inspect_image(encode(RGB, "PNG"), limits(max_pixels=100))


def mpo(*pictures: Image.Image) -> bytes:
    first, *rest = pictures
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=rest)
    return buf.getvalue()


def test_a_multi_picture_jpeg_is_a_jpeg_of_its_first_picture() -> None:
    data = mpo(RGB, Image.new("RGB", (40, 30)))
    assert Image.open(io.BytesIO(data)).format == "MPO"
    info = inspect_image(data, limits())
    assert (info.format, info.ext, info.media_type) == ("JPEG", "jpg", "image/jpeg")
    assert decode_rgb(data, 10_000).getpixel((20, 15)) == pytest.approx((10, 200, 30), abs=4)
    # its second picture cut short does not matter: only the first one is decoded
    assert inspect_image(data[:-100], limits()).format == "JPEG"


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "PCX", "TGA", "QOI", "SGI", "DDS"])
def test_formats_pillow_opens_but_we_do_not_accept_are_415(fmt: str) -> None:
    with pytest.raises(UnsupportedMedia, match="JPEG, PNG, WebP, BMP or GIF"):
        inspect_image(encode(RGB, fmt), limits())


def test_a_format_outside_the_list_is_415_even_when_pillow_reports_it() -> None:
    class Opened:
        format, width, height = "TIFF", 4, 4

    with (
        patch("ml_common.images._open", return_value=Opened()),
        pytest.raises(UnsupportedMedia, match="TIFF"),
    ):
        inspect_image(b"II*\x00", limits())


@pytest.mark.parametrize(
    ("size", "error", "words"),
    [
        ((1, 9_000), ExtremeAspectRatio, "long side may be at most 20 times its short side"),
        ((2_000, 99), ExtremeAspectRatio, "20 times"),
        ((10_001, 1_000), ImageTooLarge, "each side may be at most 10000 pixels"),
    ],
)
def test_extreme_sides_and_aspect_ratios_are_refused(
    size: tuple[int, int], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        inspect_image(encode(Image.new("1", size), "PNG"), limits(max_pixels=10**8))


def test_shape_limits_come_from_settings() -> None:
    settings = Settings(_env_file=None, max_image_side=500, max_image_aspect_ratio=2.5)  # type: ignore[call-arg]
    assert ImageLimits.from_settings(settings) == ImageLimits(40_000_000, 500, 2.5)
    assert inspect_image(
        encode(Image.new("L", (50, 20)), "PNG"), ImageLimits.from_settings(settings)
    )
    with pytest.raises(ExtremeAspectRatio):
        inspect_image(encode(Image.new("L", (51, 20)), "PNG"), ImageLimits.from_settings(settings))


def splice(data: bytes, at: int, new: bytes, cut: int = 0) -> bytes:
    return data[:at] + new + data[at + cut :]


def segment(data: bytes, marker: bytes, nth: int = 0) -> int:
    """Where the nth segment with this marker starts (the 0xFF of its marker)."""
    at = -1
    for _ in range(nth + 1):
        at = data.index(marker, at + 1)
    return at


BASELINE = encode(NOISE, "JPEG")
PROGRESSIVE = encode(NOISE, "JPEG", progressive=True)


@pytest.mark.parametrize(
    "data",
    [
        BASELINE[:-2],  # no EOI
        PROGRESSIVE[: len(PROGRESSIVE) // 2],  # cut in a middle scan
        PROGRESSIVE[: segment(PROGRESSIVE, b"\xff\xda", 3)],  # cut between scans
        splice(PROGRESSIVE, segment(PROGRESSIVE, b"\xff\xc4", 3) + 5, b"\xff" * 17, 17),
        splice(PROGRESSIVE, segment(PROGRESSIVE, b"\xff\xda", 2) + 4, b"\x09"),  # 9 components
        splice(BASELINE, -2, b"\xff\xc0\x00\x02"),  # a second frame header
        splice(PROGRESSIVE, segment(PROGRESSIVE, b"\xff\xc4", 3), b"\xff\x02\x00\x02"),
        splice(BASELINE, segment(BASELINE, b"\xff\xdb") + 2, b"\xff\xff"),
        BASELINE[: segment(BASELINE, b"\xff\xda")] + b"\xff\xd9",  # no scan
    ],
    ids=["no-eoi", "cut-in-scan", "cut-between-scans", "bad-later-huffman-table",
         "bad-scan-header", "second-frame", "reserved-marker", "bad-length", "no-scan"],
)  # fmt: skip
def test_broken_jpeg_structure_is_refused_without_decoding(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        inspect_image(data, limits())
    with pytest.raises(InvalidImage):  # and the worker could not have decoded it either
        decode_rgb(data, 10**6)


@pytest.mark.parametrize(
    "data",
    [
        PROGRESSIVE,
        encode(NOISE, "JPEG", quality=95, subsampling=0, optimize=True),
        encode(NOISE.convert("CMYK"), "JPEG"),
        encode(NOISE.convert("L"), "JPEG"),
        BASELINE + b"trailing bytes a camera left",
        encode(NOISE, "JPEG", exif=Image.Exif(), comment=b"hello"),
    ],
    ids=["progressive", "optimized-444", "cmyk", "grey", "trailer", "exif-comment"],
)
def test_every_kind_of_whole_jpeg_is_accepted(data: bytes) -> None:
    info = inspect_image(data, limits())
    assert decode_rgb(data, 10**6).size == (info.width, info.height) == (200, 120)


def test_a_png_with_a_bad_checksum_is_refused_without_inflating_it() -> None:
    data = encode(NOISE, "PNG")
    idat = data.index(b"IDAT")
    broken = splice(data, idat + 100, bytes([data[idat + 100] ^ 0xFF]), 1)
    with pytest.raises(InvalidImage, match="broken PNG"):
        inspect_image(broken, limits())
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_image(data[: len(data) // 2], limits())


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


@pytest.mark.parametrize("sample", [PROGRESSIVE, mpo(NOISE, RGB)], ids=["progressive", "mpo"])
def test_what_the_check_accepts_the_worker_can_decode(sample: bytes) -> None:
    """Random bytes spliced in anywhere (later scans' tables included): whatever the check lets
    through decodes in the worker, though the check itself decodes no pixel."""
    rng = random.Random(0)
    accepted = 0
    for _ in range(300):
        garbage = rng.randbytes(rng.randint(1, 16))
        at = rng.randrange(len(sample))
        data = splice(sample, at, garbage, len(garbage) if rng.random() < 0.5 else 0)
        try:
            info = inspect_image(data, limits())
        except MLProdError:
            continue
        accepted += 1
        assert decode_rgb(data, 10**6).size == (info.width, info.height), (at, garbage)
    assert accepted > 50  # most splices land in entropy-coded data, which libjpeg tolerates


def test_jpeg_structure_at_its_edges() -> None:
    dqt = segment(BASELINE, b"\xff\xdb")
    check_jpeg(splice(BASELINE, dqt, b"\xff\xff"))  # fill bytes before a marker are allowed
    check_jpeg(splice(BASELINE, dqt, b"\xff\x01"))  # and so is a standalone marker (TEM)
    for broken, words in [
        (b"\x89PNG\r\n\x1a\n", "SOI"),
        (b"\xff\xd8\xff", "ends inside a marker"),
        (BASELINE[: dqt + 30], "runs past its end"),
    ]:
        with pytest.raises(InvalidImage, match=words):
            check_jpeg(broken)


@given(
    st.lists(
        st.one_of(
            st.binary(min_size=0, max_size=600),
            st.sampled_from([b"\xff\x00", b"\xff\xd3", b"\xff\xff", b"\xff\xd9", b"\xff\xc4"]),
        ),
        max_size=12,
    ),
    st.integers(0, 40),
)
def test_the_windowed_scan_end_matches_the_regex(parts: list[bytes], pos: int) -> None:
    """The NumPy search for a scan's end (big scans) finds what the regex finds, window edges
    included."""
    data = b"".join(parts)
    match = jpegscan.SCAN_END.search(data, pos)
    with patch.object(jpegscan, "WINDOW", 64):
        assert jpegscan._vector_scan_end(data, pos) == (match.start() if match else None)
