"""What every detector offers the worker: the Detector protocol and its output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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

    def detect(self, image: Image.Image, source: Source | None = None) -> DetectionOutput:
        """Detect objects in an upright RGB image; boxes are in that image's pixels, or in the
        `source`'s when `image` is a reduced decode of it."""
        ...

    def warm_up(self) -> None:
        """Run one throw-away inference so that the first real request is not slow."""
        ...


METADATA_FILE = "model.json"


@dataclass(frozen=True)
class ModelInfo:
    """What `model.json` beside a SavedModel says about it (written by prepare_model)."""

    name: str
    version: str


def read_model_info(model_dir: Path) -> ModelInfo:
    """The model's name and version from its `model.json`, else named after its folder."""
    try:
        meta = json.loads((model_dir / METADATA_FILE).read_text())
        return ModelInfo(name=str(meta["name"]), version=str(meta["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return ModelInfo(name=model_dir.name, version="unversioned")
