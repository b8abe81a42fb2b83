"""Choosing and caching the detector; the fake one is for tests only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ml_celery.detectors.base import Detector, read_model_info
from ml_celery.detectors.fake import FakeDetector
from ml_celery.detectors.registry import load_detector
from ml_common.errors import DetectorUnavailable
from ml_common.settings import Settings


def test_fake_detector_is_cached_per_settings(settings: Settings) -> None:
    detector = load_detector(settings)
    assert isinstance(detector, FakeDetector)
    assert isinstance(detector, Detector)
    assert load_detector(settings) is detector


def test_fake_detector_finds_a_person_in_the_middle() -> None:
    detector = FakeDetector()
    detector.warm_up()
    [person] = detector.detect(Image.new("RGB", (200, 100))).detections
    assert detector.warmed_up
    assert detector.calls == 1
    assert person.label == "person"
    assert (person.box.x_min, person.box.y_max) == (50, 75)


@pytest.mark.parametrize("kind", ["nanodet", "tf_od_api"])
def test_missing_model_says_how_to_get_it(tmp_path: Path, kind: str) -> None:
    settings = Settings(_env_file=None, detector=kind, model_dir=tmp_path / "absent")  # type: ignore[call-arg, arg-type]
    with pytest.raises(DetectorUnavailable, match="make model"):
        load_detector(settings)


def test_model_info_falls_back_to_the_folder_name(tmp_path: Path) -> None:
    assert read_model_info(tmp_path).name == tmp_path.name
    (tmp_path / "model.json").write_text('{"name": "n", "version": "v"}')
    assert (read_model_info(tmp_path).name, read_model_info(tmp_path).version) == ("n", "v")
