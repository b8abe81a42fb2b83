"""Image sniffing and decoding with Pillow: the one place that decides what counts as an image."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ml_common.errors import ExtremeAspectRatio, ImageTooLarge, InvalidImage, UnsupportedMedia
from ml_common.imagescan import bmp_is_uncompressed, check_gif, check_webp
from ml_common.jpegscan import check_jpeg
from ml_common.settings import Settings

# Pillow format name -> (file extension, media type)
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "BMP": ("bmp", "image/bmp"),
    "GIF": ("gif", "image/gif"),
}
# Formats taken as another: a multi-picture JPEG (MPO, as some cameras write) is its first picture
ALIASES = {"MPO": "JPEG"}
ACCEPTED = "JPEG, PNG, WebP, BMP or GIF"
SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations shown turned by a quarter
# Peak bytes of memory per pixel of a whole decode, for the formats whose check decodes
# (measured with Pillow 13 on 40 Mpx: WebP ~15 with libwebp's canvas and Pillow's copy, GIF ~1,
# an RLE BMP ~2 with its row buffer); docs/reliability.md "Decompression bombs"
DECODE_BYTES_PER_PIXEL = {"WEBP": 16, "GIF": 2, "BMP": 3}
# What Pillow's parsers raise on malformed input, beyond the OSError family.
DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError
)  # fmt: skip


@dataclass(frozen=True)
class ImageInfo:
    format: str
    ext: str
    media_type: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageLimits:
    """What the API accepts: pixels in all, pixels per side, and long side over short side."""

    max_pixels: int
    max_side: int
    max_aspect_ratio: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            settings.max_image_pixels, settings.max_image_side, settings.max_image_aspect_ratio
        )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError as exc:
            raise UnsupportedMedia(
                f"the file is not an image of an accepted kind: {ACCEPTED}"
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except DECODE_ERRORS as exc:  # the header names a format but is cut short or corrupt
            raise InvalidImage(f"the image header is truncated or corrupt: {exc}") from exc
    if img.width * img.height > max_pixels:
        raise ImageTooLarge(
            f"the image has {img.width}x{img.height} pixels; at most {max_pixels} are accepted"
        )
    return img


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check that `data` is a whole image of an accepted format and shape, by its content.

    Pixels are decoded only where no structural check proves the file whole (WebP, GIF and RLE
    BMP bitstreams): `scan_image` then `check_pixels`, which a server bounds (ml_api.decodegate).
    """
    info, decode_bytes = scan_image(data, limits)
    if decode_bytes:
        check_pixels(data, limits)
    return info


def scan_image(data: bytes, limits: ImageLimits) -> tuple[ImageInfo, int]:
    """The image's format and size, checked from its header and structure (no pixel decoded),
    and the bytes of memory `check_pixels` still needs to decode it (0: it needs no decode)."""
    img = _open(data, limits.max_pixels)
    fmt = ALIASES.get(img.format or "", img.format or "")
    if fmt not in FORMATS:  # Pillow opened it, but it is none of ours
        raise UnsupportedMedia(f"{img.format} images are not accepted: {ACCEPTED}")
    _check_shape(img.width, img.height, limits)
    info = ImageInfo(fmt, *FORMATS[fmt], img.width, img.height)
    try:
        whole = _check_structure(img, data)
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the {fmt} image is truncated or corrupt: {exc}") from exc
    return info, 0 if whole else img.width * img.height * DECODE_BYTES_PER_PIXEL[fmt]


def check_pixels(data: bytes, limits: ImageLimits) -> None:
    """Decode the image whole (first frame): raise InvalidImage unless its bitstream decodes."""
    img = _open(data, limits.max_pixels)
    try:
        img.load()
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the {img.format} image is truncated or corrupt: {exc}") from exc


def _check_shape(width: int, height: int, limits: ImageLimits) -> None:
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels; each side may be at most "
            f"{limits.max_side} pixels"
        )
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise ExtremeAspectRatio(
            f"the image is {width}x{height} pixels; its long side may be at most "
            f"{limits.max_aspect_ratio:g} times its short side"
        )


def _check_structure(img: Image.Image, data: bytes) -> bool:
    """Raise unless the file's structure is whole; True when that proves the pixels decode."""
    if img.format in ("JPEG", "MPO"):
        check_jpeg(data)  # for an MPO: the first picture, the one the worker decodes
    elif img.format == "PNG":
        img.verify()  # every chunk present, every checksum right; no pixel is inflated
    elif img.format == "BMP":
        return bmp_is_uncompressed(data)  # plain rows: all there is to check is their length
    elif img.format == "GIF":
        check_gif(data)  # the LZW data of the first frame is whole, but is it valid: decode
        return False
    else:
        check_webp(data)  # the RIFF chunks are whole; the VP8/VP8L bitstream needs a decode
        return False
    return True


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open `data` as an image of at most `max_pixels`, reading its header only."""
    return _open(data, max_pixels)


def decode_rgb(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to an upright 8-bit RGB image (EXIF orientation applied, first frame, no alpha)."""
    img = _open(data, max_pixels)
    try:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency onto a white background, 16-bit greyscale scaled, not clipped."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
