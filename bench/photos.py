"""The bench's photo mix, made at bench time from real photos (never committed).

small: scikit-image's photos (0.1-0.26 MP) as JPEG q90; 2mp and 12mp: COCO val2017 photos
from ../shared/eval (or scikit-image's where that is missing) upscaled, with sensor-like noise so
the files are as large as a phone's (12 MP: 3-5 MB), the first 12 MP one with EXIF orientation 6;
png4k: a 3840x2160 PNG screenshot tiled from several photos.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT.parent / "shared" / "eval" / "coco-val2017-158"
SMALL = ("astronaut", "coffee", "chelsea")
SIZES = {"2mp": (1632, 1224), "12mp": (4000, 3000)}
SETS = ("small", "2mp", "12mp", "png4k")
EXIF_ORIENTATION = 0x0112


def _skimage(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def sources(count: int = 3) -> Iterator[Image.Image]:
    """Landscape source photos: COCO's where present (real scenes), else scikit-image's."""
    files = sorted((EVAL_DIR / "images").glob("*.jpg"))[:40]
    found = 0
    for path in files:
        with Image.open(path) as img:
            if img.width > img.height:
                found += 1
                yield img.convert("RGB")
        if found == count:
            return
    for name in SMALL[: count - found]:
        yield _skimage(name)


def jpeg(img: Image.Image, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[EXIF_ORIENTATION] = orientation
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes() if orientation else b"")
    return buf.getvalue()


def upscale(img: Image.Image, size: tuple[int, int], seed: int) -> Image.Image:
    """`img` resized to `size` with a little noise, as a phone's sensor leaves."""
    big = np.asarray(img.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0, 6, big.shape).astype(np.int16)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))


def upright_for_orientation_6(img: Image.Image) -> Image.Image:
    """The pixels a camera stores for an upright `img` when it tags them with orientation 6."""
    return img.transpose(Image.Transpose.ROTATE_270)


def screenshot(photos: list[Image.Image], size: tuple[int, int] = (3840, 2160)) -> bytes:
    """A 4K PNG: a light background with photos tiled on it, as a screenshot of a gallery."""
    canvas = Image.new("RGB", size, (242, 242, 242))
    cell_w, cell_h = size[0] // 2, size[1] // 2
    for i in range(4):
        photo = photos[i % len(photos)].resize((cell_w - 80, cell_h - 80))
        canvas.paste(photo, ((i % 2) * cell_w + 40, (i // 2) * cell_h + 40))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def photo_set(name: str, count: int = 3) -> list[bytes]:
    """One set of the mix; see the module's docstring."""
    if name == "small":
        return [jpeg(_skimage(n)) for n in SMALL]
    srcs = list(sources(count))
    if name == "png4k":
        return [screenshot(srcs)]
    out = []
    for i, src in enumerate(srcs):
        big = upscale(src, SIZES[name], seed=i)
        if name == "12mp" and i == 0:
            out.append(jpeg(upright_for_orientation_6(big), orientation=6))
        else:
            out.append(jpeg(big))
    return out


def describe(images: list[bytes]) -> dict[str, object]:
    sizes = [Image.open(io.BytesIO(data)).size for data in images]
    return {
        "images": len(images),
        "megapixels": [round(w * h / 1e6, 2) for w, h in sizes],
        "mb": [round(len(data) / 1e6, 2) for data in images],
    }
