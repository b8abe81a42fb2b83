"""What every detector offers the worker: the Detector protocol and its output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from ml_celery.detectors.preprocess import Source
from ml_common.schemas import Detection


@dataclass(frozen=True)
class DetectionOutput:
    """The detections for one image and the milliseconds each stage took."""

    detections: list[Detection]
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


@runtime_checkable
class Detector(Protocol):
    name: str
    version: str

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size a width x height photo may be decoded at for this detector."""
        ...

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        """Detect objects in an upright RGB image; boxes are in that image's pixels, or in the
        `source`'s when `image` is a reduced decode of it. Detections scored under `min_score`
        (None: the detector's own threshold, from the settings) are dropped."""
        ...

    def warm_up(self) -> None:
        """Run one throw-away inference so that the first real request is not slow."""
        ...
