"""The reduced decode against full decoding, with the real model, on photos upscaled to 12 MP."""

from __future__ import annotations

import functools
import io
import math

import pytest
from PIL import Image

from ml_celery.pipeline import analyse
from ml_common.schemas import Box, Detection, DetectionResult
from ml_common.settings import Settings
from tests.conftest import MODEL_DIR, need, photo

pytestmark = pytest.mark.model

PHOTOS = ("astronaut", "coffee", "chelsea")
TWELVE_MP = 12_000_000
# Two pixels of the photo before it was upscaled: about one pixel of the network input.
TOLERANCE_PX = 2
# Detections this close to the score threshold may fall either side of it after any change of
# input pixels: such a detection need not be found by both decodes.
THRESHOLD_MARGIN = 0.05


@pytest.fixture(scope="module")
def settings() -> Settings:
    need((MODEL_DIR / "model.tflite").is_file(), f"no model at {MODEL_DIR}: run `make model`")
    return Settings(_env_file=None, detector="nanodet", model_dir=MODEL_DIR)  # type: ignore[call-arg]


@functools.cache
def upscaled(name: str) -> tuple[Image.Image, float]:
    """The photo upscaled to about 12 MP, and the upscale factor."""
    small = photo(name).convert("RGB")
    factor = math.sqrt(TWELVE_MP / (small.width * small.height))
    size = (round(small.width * factor), round(small.height * factor))
    return small.resize(size, Image.Resampling.LANCZOS), factor


def jpeg(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def distance(a: Box, b: Box) -> float:
    return max(
        abs(a.x_min - b.x_min),
        abs(a.y_min - b.y_min),
        abs(a.x_max - b.x_max),
        abs(a.y_max - b.y_max),
    )


def assert_same(found: DetectionResult, expected: DetectionResult, tolerance: float) -> None:
    """Each confident detection of one result has a same-label one within `tolerance` pixels
    in the other, both ways round."""
    assert (found.width, found.height) == (expected.width, expected.height)
    floor = expected.score_threshold + THRESHOLD_MARGIN
    for these, those in ((expected, found), (found, expected)):
        for det in (d for d in these.detections if d.score >= floor):
            nearest = min((distance(det.box, d.box) for d in same_label(those, det)), default=None)
            assert nearest is not None, f"{det.label} {det.score:.2f} found by one decode only"
            assert nearest <= tolerance, f"{det.label}: boxes {nearest:.1f} px apart"


def same_label(result: DetectionResult, det: Detection) -> list[Detection]:
    return [d for d in result.detections if d.label == det.label]


@pytest.mark.parametrize("name", PHOTOS)
def test_the_reduced_decode_finds_what_full_decoding_finds(settings: Settings, name: str) -> None:
    big, factor = upscaled(name)
    data = jpeg(big)
    full = analyse(data, settings, reduced=False)
    reduced = analyse(data, settings)
    assert full.detections, f"nothing found on {name}: the comparison would prove nothing"
    assert (reduced.width, reduced.height) == big.size
    assert_same(reduced, full, TOLERANCE_PX * factor)
    assert reduced.timings.decode_ms is not None and full.timings.decode_ms is not None


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_exif_rotated_photo_comes_out_upright_with_its_boxes(
    settings: Settings, orientation: int
) -> None:
    big, factor = upscaled("astronaut")
    # stored as a camera held sideways stores it: the pixels turned, the tag saying how to undo it
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}
    stored = big.transpose(undo.get(orientation, Image.Transpose.ROTATE_270))
    upright = analyse(jpeg(big), settings)
    rotated = analyse(jpeg(stored, orientation), settings)
    assert any(d.label == "person" for d in rotated.detections)
    assert_same(rotated, upright, TOLERANCE_PX * factor)
