"""Choosing and caching the detector; the fake one is for tests only."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ml_celery.detectors.base import Detector
from ml_celery.detectors.fake import FakeDetector
from ml_celery.detectors.manifest import read_manifest
from ml_celery.detectors.registry import load_detector
from ml_common.errors import DetectorUnavailable
from ml_common.models import default_model
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
    (tmp_path / "saved_model.pb").write_bytes(b"")  # model.json is read once, by the manifest
    settings = Settings(_env_file=None, detector="tf_od_api", model_dir=tmp_path)  # type: ignore[call-arg]
    model = default_model(settings)
    assert read_manifest(model, tmp_path, settings).name == tmp_path.name
    (tmp_path / "model.json").write_text('{"name": "n", "version": "v"}')
    manifest = read_manifest(model, tmp_path, settings)
    assert (manifest.name, manifest.version) == (tmp_path.name, "v")  # served by its folder's name
