"""Image sniffing and decoding with Pillow: the one place that decides what counts as an image."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ml_common.errors import ImageTooLarge, InvalidImage, UnsupportedMedia

# Pillow format name -> (file extension, media type)
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "BMP": ("bmp", "image/bmp"),
    "GIF": ("gif", "image/gif"),
}
# What Pillow's parsers raise on malformed input, beyond the OSError family.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    ext: str
    media_type: str
    width: int
    height: int


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError as exc:
            raise UnsupportedMedia("the file is not a JPEG, PNG, WebP, BMP or GIF image") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except DECODE_ERRORS as exc:  # the header names a format but is cut short or corrupt
            raise InvalidImage(f"the image header is truncated or corrupt: {exc}") from exc
    if img.width * img.height > max_pixels:
        raise ImageTooLarge(
            f"the image has {img.width}x{img.height} pixels; at most {max_pixels} are accepted"
        )
    return img


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that `data` is a whole, decodable image of an accepted format, by its content."""
    img = _open(data, max_pixels)
    width, height = img.size  # draft mode shrinks img.size
    if img.format == "JPEG":
        # decode at 1/8 scale: libjpeg still reads every scan to its end, so a cut-short or
        # corrupt file fails just the same, for a fraction of the cost of full pixels
        img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
    try:
        img.load()
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the {img.format} image is truncated or corrupt: {exc}") from exc
    fmt = img.format or ""
    ext, media_type = FORMATS[fmt]
    return ImageInfo(fmt, ext, media_type, width, height)


def decode_rgb(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to an upright 8-bit RGB image (EXIF orientation applied, first frame, no alpha)."""
    img = _open(data, max_pixels)
    try:
        img.load()
        upright = ImageOps.exif_transpose(img)
        if upright.mode in ("RGBA", "LA", "PA") or (
            upright.mode == "P" and "transparency" in upright.info
        ):
            rgba = upright.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: scale to 8 bits instead of clipping
            return upright.point(lambda v: v / 256).convert("L").convert("RGB")
        return upright.convert("RGB")
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from exc
