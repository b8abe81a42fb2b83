"""Pick and load each served model's detector, once per process."""

from __future__ import annotations

import logging
import threading

from ml_celery.detectors.base import Detector
from ml_celery.detectors.manifest import Manifest, RunOptions, read_manifest
from ml_common.errors import DetectorUnavailable
from ml_common.models import default_model, model_folder, served_models
from ml_common.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_detectors: dict[tuple[object, ...], Detector] = {}


def _cache_key(settings: Settings, model: str) -> tuple[object, ...]:
    return (
        model,
        settings.detector,
        settings.runtime,
        model_folder(settings, model).resolve(),
        settings.score_threshold,
        settings.iou_threshold,
        settings.max_detections,
        settings.intra_op_threads,
    )


def build_detector(settings: Settings, model: str | None = None) -> Detector:
    """A new detector for `model` (default: the deployment's default) as `settings` describe
    it; loads the model (seconds). Raises DetectorUnavailable naming a missing or bad file."""
    if settings.detector == "fake":
        from ml_celery.detectors.fake import FakeDetector

        return FakeDetector()
    model = model or default_model(settings)
    manifest = read_manifest(model, model_folder(settings, model), settings)
    builders = {
        "nanodet": _build_nanodet,
        "yolox_onnx": _build_labelled,
        "tflite_ssd": _build_labelled,
        "tf_od_api": _build_tf_od_api,
    }
    return builders[manifest.format](manifest, settings)


def _build_labelled(manifest: Manifest, settings: Settings) -> Detector:
    from ml_celery.detectors.tflite_ssd import TFLiteSSDDetector
    from ml_celery.detectors.yolox import YoloxDetector

    runtime = YoloxDetector if manifest.format == "yolox_onnx" else TFLiteSSDDetector
    return runtime(manifest.file, RunOptions.of(manifest, settings))


def _build_tf_od_api(manifest: Manifest, settings: Settings) -> Detector:
    from ml_celery.detectors.tensorflow import TFODAPIDetector

    return TFODAPIDetector(manifest.folder, RunOptions.of(manifest, settings))


def _build_nanodet(manifest: Manifest, settings: Settings) -> Detector:
    from ml_celery.detectors.nanodet import NanoDet

    runtime: type[NanoDet]
    if settings.runtime == "tflite":
        from ml_celery.detectors.litert import NanoDetLiteDetector

        runtime = NanoDetLiteDetector
    else:
        from ml_celery.detectors.tensorflow import NanoDetDetector

        runtime = NanoDetDetector
    return runtime(manifest.folder, RunOptions.of(manifest, settings))


def load_detector(settings: Settings | None = None, model: str | None = None) -> Detector:
    """The process's detector of `model` for `settings`, built on first use and reused after."""
    settings = settings or get_settings()
    model = model or default_model(settings)
    if model not in served_models(settings):  # a task routed to the wrong queue
        raise DetectorUnavailable(f"this worker does not serve model {model!r}")
    key = _cache_key(settings, model)
    with _lock:
        if key not in _detectors:
            logger.info("loading model %s from %s", model, model_folder(settings, model))
            _detectors[key] = build_detector(settings, model)
        return _detectors[key]
