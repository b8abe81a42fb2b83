"""The worker's pipeline without Celery: decode, detect, and what the result reports."""

from __future__ import annotations

import io

from PIL import Image

from ml_celery.pipeline import analyse
from ml_common.settings import Settings


def test_the_result_reports_the_threshold_the_worker_applied(
    settings: Settings, image_bytes: bytes
) -> None:
    tuned = settings.model_copy(update={"score_threshold": 0.45})
    result = analyse(image_bytes, tuned)
    assert result.score_threshold == 0.45
    assert (result.width, result.height) == (64, 48)
    assert [d.label for d in result.detections] == ["person"]
    assert result.timings.annotate_ms is None  # the API draws the image when asked for it


def test_an_exif_rotated_photo_is_reported_upright(settings: Settings) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to show
    buf = io.BytesIO()
    Image.new("RGB", (60, 90)).save(buf, format="JPEG", exif=exif.tobytes())
    result = analyse(buf.getvalue(), settings)
    assert (result.width, result.height) == (90, 60)
    [person] = result.detections  # the fake detector's box: the middle half of the photo
    assert (person.box.x_max, person.box.y_max) == (67.5, 45)
