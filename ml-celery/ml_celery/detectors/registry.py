"""Pick and load the configured detector, once per process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ml_celery.detectors.base import Detector
from ml_common.errors import DetectorUnavailable
from ml_common.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_detectors: dict[tuple[object, ...], Detector] = {}


def _cache_key(settings: Settings) -> tuple[object, ...]:
    return (
        settings.detector,
        settings.runtime,
        settings.model_dir.resolve(),
        settings.score_threshold,
        settings.iou_threshold,
        settings.max_detections,
        settings.intra_op_threads,
    )


def _require_model(model_file: Path) -> None:
    if not model_file.is_file():
        raise DetectorUnavailable(
            f"no {model_file.name} in {model_file.parent}: run `make model` to prepare it"
        )


def build_detector(settings: Settings) -> Detector:
    """A new detector as `settings` describe it (loads the model: seconds)."""
    if settings.detector == "fake":
        from ml_celery.detectors.fake import FakeDetector

        return FakeDetector()
    if settings.detector == "nanodet":
        return _build_nanodet(settings)
    _require_model(settings.model_dir / "saved_model.pb")
    from ml_celery.detectors.tensorflow import TFODAPIDetector

    return TFODAPIDetector(
        settings.model_dir,
        score_threshold=settings.score_threshold,
        max_detections=settings.max_detections,
        intra_op_threads=settings.intra_op_threads,
    )


def _build_nanodet(settings: Settings) -> Detector:
    from ml_celery.detectors.nanodet import NanoDet

    runtime: type[NanoDet]
    if settings.runtime == "tflite":
        from ml_celery.detectors.litert import TFLITE_FILE, NanoDetLiteDetector

        runtime, model_file = NanoDetLiteDetector, TFLITE_FILE
    else:
        from ml_celery.detectors.tensorflow import NanoDetDetector

        runtime, model_file = NanoDetDetector, "saved_model.pb"
    _require_model(settings.model_dir / model_file)
    return runtime(
        settings.model_dir,
        score_threshold=settings.score_threshold,
        iou_threshold=settings.iou_threshold,
        max_detections=settings.max_detections,
        intra_op_threads=settings.intra_op_threads,
    )


def load_detector(settings: Settings | None = None) -> Detector:
    """The process's detector for `settings`, built on first use and reused after."""
    settings = settings or get_settings()
    key = _cache_key(settings)
    with _lock:
        if key not in _detectors:
            logger.info("loading detector %s from %s", settings.detector, settings.model_dir)
            _detectors[key] = build_detector(settings)
        return _detectors[key]
