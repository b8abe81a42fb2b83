"""The files `mlprod detect` sends: images by their name's extension and by their first bytes;
every other file is skipped, and named in the summary with why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# what the API accepts, by content (it decides by content too, never by the name)
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
NOT_AN_IMAGE_NAME = "not an image by its name (.jpg, .jpeg, .png, .webp, .bmp or .gif)"
NOT_AN_IMAGE_CONTENT = "not an image by its content (not JPEG, PNG, WebP, BMP or GIF)"


@dataclass
class Found:
    """Name (relative to the folder given, or the file's own name) → path of each image, sorted
    by name; and each skipped file's name → why."""

    images: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def looks_like_image(path: Path) -> bool:
    """Whether the file starts as a JPEG, PNG, GIF, BMP or WebP does."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def missing_paths(paths: Sequence[Path]) -> list[Path]:
    return [path for path in paths if not path.exists()]


def find_images(paths: Sequence[Path]) -> Found:
    """The images under `paths` (files, or folders walked whole), and the files skipped."""
    found = Found()
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if not path.is_file():
                continue
            name = path.relative_to(root).as_posix() if root.is_dir() else path.name
            if name in found.images:
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                found.skipped[name] = NOT_AN_IMAGE_NAME
            elif not looks_like_image(path):
                found.skipped[name] = NOT_AN_IMAGE_CONTENT
            else:
                found.images[name] = path
    found.images = dict(sorted(found.images.items()))
    return found
