"""The annotated image: detections drawn onto the upload in the page's class colours, labelled
with the score (pure Pillow, so the API can render it on request)."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ml_common.errors import TaskNotFound
from ml_common.images import decode_rgb
from ml_common.palette import class_colour, text_colour
from ml_common.schemas import Box, Detection
from ml_common.storage import Storage


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # loading the font costs about as much as drawing all the boxes: once per size is enough
    return ImageFont.load_default(size=size)


def draw_detections(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of the RGB `image` with a box and a "label score" tag for each detection."""
    annotated = image.convert("RGB")  # always a copy, so the caller's image stays untouched
    draw = ImageDraw.Draw(annotated)
    short_side = min(annotated.size)
    line_width = max(2, short_side // 200)
    font = _font(max(12, short_side // 40))
    for detection in sorted(detections, key=lambda d: d.score):
        colour = class_colour(detection.class_id)
        box = detection.box
        draw.rectangle(
            (box.x_min, box.y_min, box.x_max, box.y_max), outline=colour, width=line_width
        )
        caption = f"{detection.label} {round(detection.score * 100)}%"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tag_w, tag_h = right - left + 2 * line_width, bottom - top + 2 * line_width
        tag_x = min(max(box.x_min, 0), max(annotated.width - tag_w, 0))
        tag_y = box.y_min - tag_h if box.y_min >= tag_h else box.y_min
        draw.rectangle((tag_x, tag_y, tag_x + tag_w, tag_y + tag_h), fill=colour)
        draw.text(
            (tag_x + line_width - left, tag_y + line_width - top),
            caption,
            fill=text_colour(colour),
            font=font,
        )
    return annotated


def render_annotated(data: bytes, detections: Sequence[Detection], max_pixels: int) -> bytes:
    """The upload `data`, upright at its full size, with `detections` drawn on it, as a JPEG."""
    buf = io.BytesIO()
    draw_detections(decode_rgb(data, max_pixels), detections).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def annotated_image(
    storage: Storage, upload_key: str, detections: Sequence[Detection], max_pixels: int
) -> bytes:
    """The annotated JPEG of a finished task: drawn and stored on the first request, read back
    on later ones (the worker never draws it, so nobody pays for an image nobody asks for)."""
    key = storage.annotated_key(upload_key, "jpg")
    try:
        return storage.read(key)
    except TaskNotFound:
        pass
    data = render_annotated(storage.read(upload_key), detections, max_pixels)
    storage.write(key, data)  # atomic: two first requests at once both write the same whole file
    return data


def warm_up() -> None:
    """Draw one caption and encode one JPEG, so the first request loads no font or encoder."""
    box = Box(x_min=8, y_min=8, x_max=64, y_max=64)
    person = Detection(label="person", class_id=0, score=1.0, box=box, box_normalized=box)
    draw_detections(Image.new("RGB", (640, 480)), [person]).save(io.BytesIO(), format="JPEG")
