"""The real converted NanoDet model on real photos, and TFODAPIDetector on a model built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ml_celery.detectors.manifest import RunOptions
from ml_celery.detectors.nanodet import NanoDet
from ml_celery.detectors.registry import build_detector
from ml_celery.detectors.tensorflow import TFODAPIDetector
from ml_common.coco import COCO_80_LABELS
from ml_common.schemas import Box, Detection
from ml_common.settings import Settings
from tests.conftest import MODEL_DIR, need, photo

# Measured by eye on skimage's astronaut (512 x 512): hair top to the bottom edge, left sleeve
# to right shoulder.
ASTRONAUT_BOX = Box(x_min=19, y_min=15, x_max=360, y_max=512)
# The cup itself (without saucer) on skimage's coffee (600 x 400).
COFFEE_CUP_REGION = Box(x_min=175, y_min=15, x_max=420, y_max=300)


def box_iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    height = max(0.0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    intersection = width * height

    def area(box: Box) -> float:
        return (box.x_max - box.x_min) * (box.y_max - box.y_min)

    return intersection / (area(a) + area(b) - intersection)


def best(detections: list[Detection], label: str) -> Detection:
    matches = [d for d in detections if d.label == label]
    assert matches, f"no {label} among {[(d.label, round(d.score, 2)) for d in detections]}"
    return max(matches, key=lambda d: d.score)


@pytest.fixture(scope="module", params=["tflite", "savedmodel"])
def nanodet(request: pytest.FixtureRequest) -> NanoDet:
    need((MODEL_DIR / "model.tflite").is_file(), f"no model at {MODEL_DIR}: run `make model`")
    settings = Settings(
        _env_file=None, detector="nanodet", model_dir=MODEL_DIR, runtime=request.param
    )  # type: ignore[call-arg]
    detector = build_detector(settings)
    assert isinstance(detector, NanoDet)
    detector.warm_up()
    return detector


@pytest.mark.model
def test_astronaut_is_one_person_covering_her(nanodet: NanoDet) -> None:
    output = nanodet.detect(photo("astronaut"))
    person = best(output.detections, "person")
    assert person.score > 0.5
    assert box_iou(person.box, ASTRONAUT_BOX) > 0.9  # 0.84 with cells at index * stride
    assert sum(d.label == "person" and d.score > 0.5 for d in output.detections) == 1
    assert output.inference_ms > 0
    assert min(output.preprocess_ms, output.postprocess_ms) >= 0


@pytest.mark.model
def test_coffee_has_a_cup(nanodet: NanoDet, monkeypatch: pytest.MonkeyPatch) -> None:
    # letterboxed, the cup scores 0.27 (and the table 0.51): below the default threshold
    monkeypatch.setattr(nanodet, "score_threshold", 0.2)
    cup = best(nanodet.detect(photo("coffee")).detections, "cup")
    centre_x, centre_y = (cup.box.x_min + cup.box.x_max) / 2, (cup.box.y_min + cup.box.y_max) / 2
    region = COFFEE_CUP_REGION
    assert region.x_min < centre_x < region.x_max
    assert region.y_min < centre_y < region.y_max


@pytest.mark.model
def test_chelsea_has_a_cat_filling_the_photo(nanodet: NanoDet) -> None:
    # The model also calls the face "person" and "dog" with similar scores; the cat must be there.
    cat = best(nanodet.detect(photo("chelsea")).detections, "cat")
    normalized = cat.box_normalized
    assert (normalized.x_max - normalized.x_min) * (normalized.y_max - normalized.y_min) > 0.6


@pytest.mark.model
def test_nanodet_reports_its_name_and_handles_odd_images(nanodet: NanoDet) -> None:
    assert (nanodet.name, nanodet.version) == ("nanodet-g-416", "human-models-3.0.4")
    for image in (Image.new("RGB", (1, 1)), Image.new("RGB", (3000, 20), (255, 255, 255))):
        for d in nanodet.detect(image).detections:
            assert 0 <= d.box_normalized.x_min <= d.box_normalized.x_max <= 1
            assert 0 <= d.box_normalized.y_min <= d.box_normalized.y_max <= 1


def save_fake_od_api_model(export_dir: Path) -> None:
    """A SavedModel with the TF2 OD API's signature; the cup's score is the image brightness."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")

    def serve(input_tensor: Any) -> dict[str, Any]:
        brightness = tf.reduce_mean(tf.cast(input_tensor, tf.float32)) / 255.0
        return {
            "detection_boxes": tf.constant(
                [[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4], [0, 0, 1, 1]]]
            ),
            # COCO-91 ids: 47 cup, 1 person, 12 unused, 18 dog
            "detection_classes": tf.constant([[47.0, 1.0, 12.0, 18.0]]),
            "detection_scores": tf.stack([[brightness, 0.6, 0.99, 0.95]]),
            "num_detections": tf.constant([3.0]),
        }

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[spec])
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def od_api_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    export_dir = tmp_path_factory.mktemp("od-api") / "model"
    save_fake_od_api_model(export_dir)
    return export_dir


def test_tf_od_api_detector_maps_coco91_ids_and_boxes(od_api_dir: Path) -> None:
    settings = Settings(_env_file=None, detector="tf_od_api", model_dir=od_api_dir)  # type: ignore[call-arg]
    detector = build_detector(settings)
    assert isinstance(detector, TFODAPIDetector)
    detector.warm_up()
    output = detector.detect(Image.new("RGB", (200, 100), (255, 255, 255)))
    assert [(d.label, d.class_id) for d in output.detections] == [("cup", 41), ("person", 0)]
    cup = output.detections[0]
    assert cup.score == pytest.approx(1.0)
    assert (cup.box.x_min, cup.box.y_min, cup.box.x_max, cup.box.y_max) == pytest.approx(
        (40, 10, 120, 50)
    )
    assert cup.box_normalized.x_max == pytest.approx(0.6)
    assert detector.name == "model"


def test_tf_od_api_detector_applies_threshold_and_cap(od_api_dir: Path) -> None:
    options = RunOptions("model", "unversioned", COCO_80_LABELS, 0.5, max_detections=1)
    detector = TFODAPIDetector(od_api_dir, options)
    dark = Image.fromarray(np.full((40, 40, 3), 51, np.uint8))  # brightness 0.2: no cup
    assert [d.label for d in detector.detect(dark).detections] == ["person"]
    bright = Image.new("RGB", (40, 40), (255, 255, 255))
    assert [d.label for d in detector.detect(bright).detections] == ["cup"]
    # min_score, per call, in place of the threshold: the dark cup (0.2) is kept
    assert [d.label for d in detector.detect(dark, min_score=0.1).detections] == ["person"]
    two = TFODAPIDetector(od_api_dir, RunOptions("m", "1", COCO_80_LABELS, 0.5, max_detections=2))
    assert [d.label for d in two.detect(dark, min_score=0.1).detections] == ["person", "cup"]
