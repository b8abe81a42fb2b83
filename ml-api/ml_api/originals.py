"""`original_size`: the upright size of a photo the client shrank before sending it.

A phone photo of 12 MP is sent at a few hundred kB once shrunk to the size the model needs;
the client says how large the photo was, so that the boxes come back in its pixels. The claim
is checked against the image sent: never smaller, the same shape within a pixel of rounding,
and within the limits an upload of that size would have to meet.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Form, Query
from PIL import ExifTags

from ml_common.errors import InvalidOriginalSize
from ml_common.images import SWAPS_AXES, ImageInfo, ImageLimits, open_image

SIZE = re.compile(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*")
DESCRIPTION = (
    "WIDTHxHEIGHT of the upright photo that the image sent was shrunk from (e.g. 4032x3024): "
    "boxes come back in its pixels. Same shape as the image sent, within a pixel"
)
Size = tuple[int, int]


def parse_original_size(text: str) -> Size:
    """`WIDTHxHEIGHT` as two positive ints."""
    match = SIZE.fullmatch(text)
    if match is None or 0 in (size := (int(match[1]), int(match[2]))):
        raise InvalidOriginalSize(
            f"original_size must be WIDTHxHEIGHT in pixels, e.g. 4032x3024; got {text[:40]!r}"
        )
    return size


def upright_size(data: bytes, info: ImageInfo, max_pixels: int) -> Size:
    """The image's size as shown, its EXIF rotation applied (only a JPEG's header is read)."""
    if info.format != "JPEG":
        return info.width, info.height
    orientation = open_image(data, max_pixels).getexif().get(ExifTags.Base.Orientation, 1)
    swap = orientation in SWAPS_AXES
    return (info.height, info.width) if swap else (info.width, info.height)


def check_original_size(claimed: Size, sent: Size, limits: ImageLimits) -> list[int]:
    """`claimed` as the task's [width, height], or InvalidOriginalSize saying what is wrong."""
    (width, height), (sent_w, sent_h) = claimed, sent
    shown = f"original_size {width}x{height}"
    if width < sent_w or height < sent_h:
        raise InvalidOriginalSize(f"{shown} is smaller than the image sent ({sent_w}x{sent_h})")
    # a shrink rounds each side to a whole pixel: the other side may be off by up to one
    if abs(sent_w * height / width - sent_h) > 1 or abs(sent_h * width / height - sent_w) > 1:
        raise InvalidOriginalSize(
            f"{shown} is not the shape of the image sent ({sent_w}x{sent_h}): "
            "shrink both sides by the same factor"
        )
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise InvalidOriginalSize(
            f"{shown} is past the limits: at most {limits.max_pixels} pixels and "
            f"{limits.max_side} per side"
        )
    return [width, height]


def original_size_field(
    form: Annotated[str | None, Form(alias="original_size", description=DESCRIPTION)] = None,
    query: Annotated[str | None, Query(alias="original_size", description=DESCRIPTION)] = None,
) -> Size | None:
    """The upload's `original_size`, from its form field or its query parameter."""
    text = form if form is not None else query
    return parse_original_size(text) if text else None


OriginalSizeDep = Annotated[Size | None, Depends(original_size_field)]
