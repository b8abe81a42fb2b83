"""LiteRT (model.tflite) gives the SavedModel's detections on the real photos."""

from __future__ import annotations

import numpy as np
import pytest

from ml_celery.detectors.litert import TFLITE_FILE, NanoDetLiteDetector
from ml_celery.detectors.preprocess import preprocess
from ml_celery.detectors.registry import build_detector
from ml_celery.detectors.tensorflow import NanoDetDetector
from ml_common.settings import Settings
from tests.conftest import MODEL_DIR, need, photo

PHOTOS = ("astronaut", "coffee", "chelsea")


def _build(runtime: str) -> NanoDetDetector | NanoDetLiteDetector:
    need((MODEL_DIR / TFLITE_FILE).is_file(), f"no {TFLITE_FILE} in {MODEL_DIR}: run `make model`")
    settings = Settings(_env_file=None, model_dir=MODEL_DIR, runtime=runtime)  # type: ignore[call-arg, arg-type]
    detector = build_detector(settings)
    assert isinstance(detector, NanoDetDetector | NanoDetLiteDetector)
    return detector


@pytest.fixture(scope="module")
def detectors() -> tuple[NanoDetDetector | NanoDetLiteDetector, ...]:
    return _build("savedmodel"), _build("tflite")


@pytest.mark.model
def test_tflite_is_the_default_runtime() -> None:
    assert isinstance(_build("tflite"), NanoDetLiteDetector)
    assert Settings(_env_file=None).runtime == "tflite"  # type: ignore[call-arg]


@pytest.mark.model
@pytest.mark.parametrize("name", PHOTOS)
def test_tflite_raw_outputs_match_the_saved_model(
    detectors: tuple[NanoDetDetector | NanoDetLiteDetector, ...], name: str
) -> None:
    saved, lite = detectors
    batch, _ = preprocess(photo(name), saved.input_size, "stretch")
    expected, actual = saved.infer(batch), lite.infer(batch)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, atol=2e-3, err_msg=key)


@pytest.mark.model
@pytest.mark.parametrize("name", PHOTOS)
def test_tflite_detections_match_the_saved_model(
    detectors: tuple[NanoDetDetector | NanoDetLiteDetector, ...], name: str
) -> None:
    saved, lite = (d.detect(photo(name)).detections for d in detectors)
    assert [(d.label, round(d.score, 2)) for d in lite] == [
        (d.label, round(d.score, 2)) for d in saved
    ]
    for a, b in zip(lite, saved, strict=True):
        corners = (a.box.x_min, a.box.y_min, a.box.x_max, a.box.y_max)
        assert corners == pytest.approx(
            (b.box.x_min, b.box.y_min, b.box.x_max, b.box.y_max), abs=0.5
        )
