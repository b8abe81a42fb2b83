"""The worker's pipeline without Celery: decode, detect, annotate, and what the result reports."""

from __future__ import annotations

import io

from PIL import Image

from ml_celery.pipeline import analyse
from ml_common.settings import Settings


def test_the_result_reports_the_threshold_the_worker_applied(
    settings: Settings, image_bytes: bytes
) -> None:
    tuned = settings.model_copy(update={"score_threshold": 0.45})
    result, annotated = analyse(image_bytes, tuned)
    assert result.score_threshold == 0.45
    assert (result.width, result.height) == (64, 48)
    assert [d.label for d in result.detections] == ["person"]
    assert Image.open(io.BytesIO(annotated)).format == "JPEG"
