"""A deterministic stand-in detector for tests of code that uses a Detector; never a model."""

from __future__ import annotations

from PIL import Image

from ml_celery.detectors.base import DetectionOutput
from ml_celery.detectors.preprocess import Source
from ml_common.schemas import Box, Detection


class FakeDetector:
    """Finds one "person" over the middle half of every image, score 0.9. For tests only."""

    name = "fake"
    version = "0"

    def __init__(self) -> None:
        self.calls = 0
        self.warmed_up = False

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        self.calls += 1
        width, height = (source.width, source.height) if source else image.size
        box = Box(x_min=width / 4, y_min=height / 4, x_max=width * 3 / 4, y_max=height * 3 / 4)
        person = Detection(
            label="person",
            class_id=0,
            score=0.9,
            box=box,
            box_normalized=Box(x_min=0.25, y_min=0.25, x_max=0.75, y_max=0.75),
        )
        return DetectionOutput([person], preprocess_ms=0.0, inference_ms=0.0, postprocess_ms=0.0)

    def warm_up(self) -> None:
        self.warmed_up = True
