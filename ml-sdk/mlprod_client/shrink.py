"""Shrinking a big photo before it is sent (`max_side`): upright, as a JPEG, with its size.

A 12 MP phone photo is 3-6 MB; the models look at it at 416 pixels. Sent with its long side at
`max_side` it is a tenth of the bytes, and the API, told `original_size`, still answers with
boxes in the photo's own pixels. Needs Pillow (`pip install "mlprod-client[shrink]"`), imported
only when a photo is to be shrunk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

JPEG_QUALITY = 90  # boxes within a pixel of the unshrunk photo's (docs/performance.md)
ORIENTATION = 0x0112  # the EXIF tag
SWAPS_AXES = frozenset({5, 6, 7, 8})  # orientations shown turned by a quarter (as ml_common's)


@dataclass(frozen=True)
class Shrunk:
    """The JPEG to send, and the upright size of the photo it stands for."""

    data: bytes
    original_size: tuple[int, int]

    @property
    def original_size_field(self) -> str:
        """The API's `original_size` form field: WIDTHxHEIGHT."""
        return f"{self.original_size[0]}x{self.original_size[1]}"


def _rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # as the API does
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def shrink(data: bytes, max_side: int, quality: int = JPEG_QUALITY) -> Shrunk | None:
    """`data` with its long side brought down to `max_side` (EXIF rotation applied), or None
    when it is no larger than that already (it is then sent as it is)."""
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # the SDK installs without Pillow
        raise RuntimeError('max_side needs Pillow: pip install "mlprod-client[shrink]"') from exc
    with Image.open(io.BytesIO(data)) as img:
        swap = img.getexif().get(ORIENTATION, 1) in SWAPS_AXES
        size = (img.height, img.width) if swap else img.size
        scale = max_side / max(size)
        if scale >= 1:
            return None
        target = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        # a JPEG decodes at 1/2, 1/4 or 1/8 of its size at once: 12 MP in a few tens of ms
        img.draft("RGB", (target[1], target[0]) if swap else target)
        upright = ImageOps.exif_transpose(img)
    small = _rgb(upright).resize(target, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return Shrunk(buf.getvalue(), (size[0], size[1]))


def shrink_part(part: tuple[str, Any], max_side: int) -> tuple[tuple[str, Any], str | None]:
    """A file part (name, bytes or open file) shrunk to `max_side`, and its `original_size`
    field; the part as it was and None when the photo is no larger than that."""
    name, source = part
    data = source if isinstance(source, bytes) else source.read()
    shrunk = shrink(data, max_side)
    if shrunk is None:
        return (name, data), None
    return (name, shrunk.data), shrunk.original_size_field
