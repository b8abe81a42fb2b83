"""Decode only what the model needs: a reduced, upright RGB image and the original's size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import ExifTags, Image

from ml_celery.detectors.preprocess import Source
from ml_common.errors import InvalidImage
from ml_common.images import DECODE_ERRORS, SWAPS_AXES, open_image, to_rgb

Box = tuple[float, float, float, float]

# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose)
UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# modes Image.reduce takes as they are; others become RGB first, at full size
REDUCIBLE = frozenset({"RGB", "RGBA", "L", "LA"})


@dataclass(frozen=True)
class Decoded:
    """An upright RGB image no smaller than the model needs, and the upright original it
    stands for (its size, and the part of `image` that covers it)."""

    image: Image.Image
    source: Source


def transpose_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """Where `box` of an image of `size` lies once the image is transposed by `method`."""
    x0, y0, x1, y1 = box
    width, height = size
    flipped_x = (width - x1, y0, width - x0, y1)
    moves: dict[Image.Transpose, Box] = {
        Image.Transpose.FLIP_LEFT_RIGHT: flipped_x,
        Image.Transpose.FLIP_TOP_BOTTOM: (x0, height - y1, x1, height - y0),
        Image.Transpose.ROTATE_180: (width - x1, height - y1, width - x0, height - y0),
        Image.Transpose.TRANSPOSE: (y0, x0, y1, x1),
        Image.Transpose.ROTATE_90: (y0, width - x1, y1, width - x0),
        Image.Transpose.ROTATE_270: (height - y1, x0, height - y0, x1),
        Image.Transpose.TRANSVERSE: (height - y1, width - x1, height - y0, width - x0),
    }
    return moves[method]


def _reduce(img: Image.Image, needed: tuple[int, int]) -> tuple[Image.Image, Box]:
    """`img` decoded at the smallest scale still covering `needed`, and the box of the
    result that covers the whole original (a partial last block overhangs it)."""
    width, height = img.size
    if img.format in ("JPEG", "MPO"):
        # libjpeg scales the DCT while decoding (1/2, 1/4, 1/8): the big image never exists
        drafted = img.draft("RGB", needed)
        img.load()
        return img, drafted[1] if drafted else (0.0, 0.0, float(width), float(height))
    img.load()
    if img.mode not in REDUCIBLE:
        img = to_rgb(img)
    factor = max(1, min(width // max(1, needed[0]), height // max(1, needed[1])))
    reduced = img.reduce(factor) if factor > 1 else img
    return reduced, (0.0, 0.0, width / factor, height / factor)


def decode_for_model(
    data: bytes, max_pixels: int, needed_size: Callable[[int, int], tuple[int, int]]
) -> Decoded:
    """Decode `data` at the smallest scale whose upright size still covers
    `needed_size(width, height)` of the upright original (a detector's `needed_size`). The EXIF
    rotation is applied to the small image; transparency goes onto white, 16-bit becomes 8-bit."""
    img = open_image(data, max_pixels)
    try:
        orientation = int(img.getexif().get(ExifTags.Base.Orientation, 1))
        swap = orientation in SWAPS_AXES
        width, height = (img.height, img.width) if swap else img.size
        needed = needed_size(width, height)
        reduced, box = _reduce(img, (needed[1], needed[0]) if swap else needed)
        method = UPRIGHT.get(orientation)
        if method is not None:
            box = transpose_box(box, reduced.size, method)
            reduced = reduced.transpose(method)
        return Decoded(to_rgb(reduced), Source(width, height, box))
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from exc
