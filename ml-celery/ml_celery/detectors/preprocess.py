"""Image -> network input: stretch or letterbox (centred or top-left), BGR, NCHW (numpy, OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

# letterbox: centred (NanoDet); topleft: the image at the top-left corner (YOLOX)
ResizeMode = Literal["letterbox", "stretch", "topleft"]

# The worker's parallelism is its processes: OpenCV's own thread pool would only compete with them
cv2.setNumThreads(1)

# NanoDet's training config (OpenCV images, so BGR order)
BGR_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
BGR_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)


@dataclass(frozen=True)
class Geometry:
    """Where the original image lies in the network input: input = original * scale + pad."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map (N, 4) x_min, y_min, x_max, y_max boxes from input pixels to original pixels."""
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return ((boxes - pad) / scale).astype(np.float32)

    def to_input(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The inverse of `to_original`."""
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return (boxes * scale + pad).astype(np.float32)


def letterbox_geometry(width: int, height: int, size: int) -> Geometry:
    """Scale to fit `size` x `size` keeping the aspect ratio, centred, like NanoDet's keep_ratio."""
    scale = min(size / width, size / height)
    # at least one pixel, or a 1 x 4000 strip would vanish (and its scale become 0)
    resized_w, resized_h = max(1, round(width * scale)), max(1, round(height * scale))
    return Geometry(
        width=width,
        height=height,
        scale_x=resized_w / width,
        scale_y=resized_h / height,
        pad_x=float((size - resized_w) // 2),
        pad_y=float((size - resized_h) // 2),
    )


def stretch_geometry(width: int, height: int, size: int) -> Geometry:
    return Geometry(width, height, size / width, size / height, 0.0, 0.0)


def topleft_geometry(width: int, height: int, size: int) -> Geometry:
    """Like `letterbox_geometry`, with the image at the top-left and the padding after it."""
    centred = letterbox_geometry(width, height, size)
    return Geometry(width, height, centred.scale_x, centred.scale_y, 0.0, 0.0)


def make_geometry(width: int, height: int, size: int, mode: ResizeMode) -> Geometry:
    geometries = {
        "letterbox": letterbox_geometry,
        "stretch": stretch_geometry,
        "topleft": topleft_geometry,
    }
    return geometries[mode](width, height, size)


def resized_size(geometry: Geometry) -> tuple[int, int]:
    """The size the original image is resized to inside the network input."""
    return round(geometry.width * geometry.scale_x), round(geometry.height * geometry.scale_y)


@dataclass(frozen=True)
class Source:
    """The original photo that a reduced decode stands for: its upright size in pixels, and the
    box of the reduced image that covers it (a partial last block can overhang by < 1 pixel)."""

    width: int
    height: int
    box: tuple[float, float, float, float]


def resize_image(
    image: Image.Image,
    size: int,
    mode: ResizeMode,
    source: Source | None = None,
    pad_value: int = 0,
) -> tuple[npt.NDArray[np.uint8], Geometry]:
    """An RGB `size` x `size` uint8 array of `image` (`pad_value` borders when letterboxed). With a
    `source`, `image` is a reduced decode of it, and the geometry maps to the source's pixels."""
    if source is None:
        source = Source(image.width, image.height, (0.0, 0.0, image.width, image.height))
    geometry = make_geometry(source.width, source.height, size, mode)
    resized_w, resized_h = resized_size(geometry)
    resized = image.convert("RGB").resize(
        (resized_w, resized_h), Image.Resampling.BILINEAR, box=source.box
    )
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    x0, y0 = int(geometry.pad_x), int(geometry.pad_y)
    canvas[y0 : y0 + resized_h, x0 : x0 + resized_w] = np.asarray(resized)
    return canvas, geometry


def shrink_linear(
    image: Image.Image, box: tuple[float, float, float, float], width: int, height: int
) -> npt.NDArray[np.uint8]:
    """`box` (x0, y0, x1, y1: pixels, fractional) of RGB `image` resized to `width` x `height`,
    as YOLOX trains and evaluates: OpenCV's INTER_LINEAR, pixel centres aligned. A fifth of what
    Pillow's filtered resize costs on a small photo. Beyond a 2x shrink, where plain bilinear
    would alias, it is Pillow's filtered resize (a large PNG: a JPEG arrives reduced already).
    """
    x0, y0, x1, y1 = box
    scale_x, scale_y = (x1 - x0) / width, (y1 - y0) / height
    if max(scale_x, scale_y) > 2:
        resized = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
        return np.asarray(resized)
    to_source = np.array(
        [
            [scale_x, 0.0, x0 + 0.5 * scale_x - 0.5],
            [0.0, scale_y, y0 + 0.5 * scale_y - 0.5],
        ]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    resized_pixels: npt.NDArray[np.uint8] = cv2.warpAffine(
        np.asarray(image), to_source, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.uint8, copy=False)
    return resized_pixels


def topleft_bgr_input(
    image: Image.Image, size: int, pad_value: int, source: Source | None = None
) -> tuple[npt.NDArray[np.float32], Geometry]:
    """YOLOX's input: `image` resized (`shrink_linear`) to the top-left of a (1, 3, size, size)
    float32 BGR tensor in 0-255, `pad_value` elsewhere, written plane by plane (no uint8 canvas
    or strided transpose between), and the geometry that maps boxes back."""
    if source is None:
        source = Source(image.width, image.height, (0.0, 0.0, image.width, image.height))
    geometry = make_geometry(source.width, source.height, size, "topleft")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = shrink_linear(rgb, source.box, *resized_size(geometry))
    out = np.full((1, 3, size, size), pad_value, dtype=np.float32)
    height, width = resized.shape[:2]
    for channel, plane in enumerate(reversed(cv2.split(resized))):
        out[0, channel, :height, :width] = plane
    return out, geometry


def normalize_bgr_nchw(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(H, W, 3) RGB uint8 -> (1, 3, H, W) float32 BGR, mean/std normalised."""
    # channel by channel into the output: several times faster than whole-array broadcasting
    out = np.empty((1, 3, *rgb.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.subtract(
            rgb[:, :, 2 - channel], BGR_MEAN[channel], out=out[0, channel], dtype=np.float32
        )
        out[0, channel] /= BGR_STD[channel]
    return out


def preprocess(
    image: Image.Image,
    size: int = 416,
    mode: ResizeMode = "letterbox",
    source: Source | None = None,
) -> tuple[npt.NDArray[np.float32], Geometry]:
    """The NanoDet input tensor for `image` and the geometry that maps boxes back."""
    rgb, geometry = resize_image(image, size, mode, source)
    return normalize_bgr_nchw(rgb), geometry
