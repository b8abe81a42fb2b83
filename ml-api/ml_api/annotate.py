"""The annotated image: detections drawn onto the upload in the page's class colours, labelled
with the score (pure Pillow, so the API can render it on request)."""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable, Sequence

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


Rect = tuple[float, float, float, float]  # x, y, width, height


def _clear(spot: Rect, placed: list[Rect]) -> bool:
    x, y, w, h = spot
    return not any(
        x < px + pw and px < x + w and y < py + ph and py < y + h for px, py, pw, ph in placed
    )


def _spots(box: Box, w: float, h: float, size: tuple[int, int]) -> list[Rect]:
    """Where a tag may go, best first: above the box, in its corner, top right, below it."""
    width, height = size
    wanted = [
        (box.x_min, box.y_min - h), (box.x_min, box.y_min),
        (box.x_max - w, box.y_min - h), (box.x_min, box.y_max), (box.x_min, box.y_max - h),
    ]  # fmt: skip
    return [
        (min(max(x, 0), max(width - w, 0)), min(max(y, 0), max(height - h, 0)), w, h)
        for x, y in wanted
    ]


def place_tags(
    boxes: Sequence[Box], sizes: Sequence[tuple[float, float]], size: tuple[int, int]
) -> list[Rect]:
    """A spot per tag, in the order given (strongest first): the first one that no earlier tag
    covers, else the nearest clear one sliding down or up from the best (as the page does)."""
    placed: list[Rect] = []
    for box, (w, h) in zip(boxes, sizes, strict=True):
        spots = _spots(box, w, h, size)
        spot = next((s for s in spots if _clear(s, placed)), None)
        x, y = spots[0][:2]
        slides = ((x, y + sign * step * h / 2, w, h) for step in range(1, 200) for sign in (1, -1))
        fits = (s for s in slides if 0 <= s[1] <= size[1] - h and _clear(s, placed))
        placed.append(spot or next(fits, spots[0]))
    return placed


def draw_detections(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of the RGB `image` with a box and a "label score" tag for each detection, drawn
    as the page draws them: each box and tag outlined in its contrasting colour (black or
    white), every box under every tag, the strongest last, and tags moved apart so that every
    one stays readable."""
    annotated = image.convert("RGB")  # always a copy, so the caller's image stays untouched
    draw = ImageDraw.Draw(annotated)
    short_side = min(annotated.size)
    pad = max(2, short_side // 200)  # the line width, and the tag's padding
    font = _font(max(12, short_side // 40))
    strongest = sorted(detections, key=lambda d: d.score, reverse=True)
    captions = [f"{d.label} {round(d.score * 100)}%" for d in strongest]
    extents = [draw.textbbox((0, 0), caption, font=font) for caption in captions]
    sizes = [(r - left + 2 * pad, b - t + 2 * pad) for left, t, r, b in extents]
    tags = place_tags([d.box for d in strongest], sizes, annotated.size)
    halo = max(1, pad // 2)  # the outline's width on each side of a box's line
    for d in reversed(strongest):
        colour = class_colour(d.class_id)
        x0, y0, x1, y1 = d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max
        outline = (x0 - halo, y0 - halo, x1 + halo, y1 + halo)
        draw.rectangle(outline, outline=text_colour(colour), width=pad + 2 * halo)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=pad)
    for d, caption, (left, top, _, _), (x, y, w, h) in reversed(
        list(zip(strongest, captions, extents, tags, strict=True))
    ):
        colour = class_colour(d.class_id)
        draw.rectangle((x, y, x + w, y + h), fill=colour, outline=text_colour(colour), width=1)
        draw.text((x + pad - left, y + pad - top), caption, fill=text_colour(colour), font=font)
    return annotated


def render_annotated(data: bytes, detections: Sequence[Detection], max_pixels: int) -> bytes:
    """The upload `data`, upright at its full size, with `detections` drawn on it, as a JPEG."""
    buf = io.BytesIO()
    draw_detections(decode_rgb(data, max_pixels), detections).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def annotated_image(
    storage: Storage,
    upload_key: str,
    detections: Sequence[Detection],
    max_pixels: int,
    on_drawn: Callable[[float], None] | None = None,
) -> bytes:
    """The annotated JPEG of a finished task: drawn and stored on the first request, read back
    on later ones (the worker never draws it, so nobody pays for an image nobody asks for).
    `on_drawn` is told the seconds spent drawing, when it was drawn now."""
    key = storage.annotated_key(upload_key, "jpg")
    try:
        return storage.read(key)
    except TaskNotFound:
        pass
    started = time.perf_counter()
    data = render_annotated(storage.read(upload_key), detections, max_pixels)
    if on_drawn is not None:
        on_drawn(time.perf_counter() - started)
    storage.write(key, data)  # atomic: two first requests at once both write the same whole file
    return data


def warm_up() -> None:
    """Draw one caption and encode one JPEG, so the first request loads no font or encoder."""
    box = Box(x_min=8, y_min=8, x_max=64, y_max=64)
    person = Detection(label="person", class_id=0, score=1.0, box=box, box_normalized=box)
    draw_detections(Image.new("RGB", (640, 480)), [person]).save(io.BytesIO(), format="JPEG")


def annotated_url(
    storage: Storage,
    upload_key: str,
    detections: Sequence[Detection],
    max_pixels: int,
    expires_s: int,
    on_drawn: Callable[[float], None] | None = None,
) -> str | None:
    """A URL of the stored annotated JPEG valid for `expires_s` (drawn and stored first if need
    be), so the client fetches it from the bucket; None when URLs are off or the storage is a
    folder, which has none."""
    key = storage.annotated_key(upload_key, "jpg")
    url = storage.presigned_url(key, expires_s) if expires_s > 0 else None
    if url is not None and not storage.exists(key):
        annotated_image(storage, upload_key, detections, max_pixels, on_drawn)
    return url
