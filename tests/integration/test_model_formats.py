"""Real YOLOX-Nano on real photos, and each bring-your-own format on a model built here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ml_celery.detectors.registry import build_detector, load_detector
from ml_celery.detectors.yolox import YoloxDetector
from ml_celery.pipeline import analyse
from ml_celery.readiness import check_models
from ml_common.errors import DetectorUnavailable
from ml_common.settings import Settings
from tests.conftest import ROOT, encode, need, photo
from tests.integration.test_detector_model import ASTRONAUT_BOX, best, box_iou

pytestmark = pytest.mark.model

# the published file is never part of the tree: CI and tests take it from the shared folder
SHARED_MODELS = Path(os.environ.get("ML_SHARED_MODELS_DIR", ROOT.parent / "shared" / "models"))
YOLOX_NANO_DIR = SHARED_MODELS / "yolox-nano"


def model_settings(folders: dict[str, Path], **kwargs: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        models=list(folders),
        model_dirs=folders,
        **kwargs,
    )


@pytest.fixture(scope="module")
def yolox_settings() -> Settings:
    need((YOLOX_NANO_DIR / "yolox_nano.onnx").is_file(), f"no YOLOX-Nano in {YOLOX_NANO_DIR}")
    return model_settings({"yolox-nano": YOLOX_NANO_DIR})


@pytest.mark.parametrize(
    ("name", "label"), [("astronaut", "person"), ("coffee", "cup"), ("chelsea", "cat")]
)
def test_yolox_nano_finds_the_expected_object(
    yolox_settings: Settings, name: str, label: str
) -> None:
    result = analyse(encode(photo(name), quality=92), yolox_settings, model="yolox-nano")
    assert result.model_name == "yolox-nano"
    assert result.model_version == "sha256-c789161ed43c"  # the pinned file's digest
    found = best(result.detections, label)
    assert found.score >= 0.5
    labels = {d.label for d in result.detections}
    assert labels <= {label, "dining table"}, labels  # the coffee's table is really there


def test_yolox_nano_boxes_the_astronaut(yolox_settings: Settings) -> None:
    detector = load_detector(yolox_settings, "yolox-nano")
    assert isinstance(detector, YoloxDetector)
    person = best(detector.detect(photo("astronaut")).detections, "person")
    assert box_iou(person.box, ASTRONAUT_BOX) > 0.9


def test_yolox_keeps_scores_down_to_min_score(yolox_settings: Settings) -> None:
    detector = load_detector(yolox_settings, "yolox-nano")
    default = detector.detect(photo("coffee")).detections
    low = detector.detect(photo("coffee"), min_score=0.01).detections  # sure of the coffee
    threshold = yolox_settings.score_threshold
    assert min(d.score for d in low) < threshold <= min(d.score for d in default)
    assert [d for d in low if d.score >= threshold] == default  # NMS keeps the same above it


def test_a_worker_refuses_a_model_it_does_not_serve(yolox_settings: Settings) -> None:
    with pytest.raises(DetectorUnavailable, match="does not serve model 'nanodet-g-416'"):
        load_detector(yolox_settings, "nanodet-g-416")


# --- ONNX, YOLOX layout, the user's own classes -------------------------------------------
def save_yolox_layout_onnx(path: Path, classes: int, size: int = 32) -> None:
    """A (1, 3, size, size) -> (1, N, 5 + classes) ONNX model whose first anchor point (stride
    8, cell 0, 0) is a 16 x 16 box of the last class; the output ignores the image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    raw = np.zeros((1, anchors, 5 + classes), dtype=np.float32)
    raw[0, 0, :5] = [0.5, 0.5, np.log(2.0), np.log(2.0), 0.9]
    raw[0, 0, 5:] = 0.1
    raw[0, 0, -1] = 0.8
    weights = numpy_helper.from_array(raw, name="raw")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw", "nothing"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolox-layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, anchors, 5 + classes])],
        initializer=[weights, numpy_helper.from_array(np.zeros(1, np.float32), name="zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def user_folder(tmp_path: Path, file: str, meta: dict[str, Any], labels: list[str]) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "model.json").write_text(json.dumps({"labels": "labels.txt", **meta}))
    return folder / file


def test_an_onnx_yolox_model_with_its_own_labels(tmp_path: Path) -> None:
    model = user_folder(
        tmp_path, "model.onnx", {"format": "yolox_onnx", "version": "7"}, ["a", "b"]
    )
    save_yolox_layout_onnx(model, classes=2)
    settings = model_settings({"mine": model.parent})
    check_models(settings)
    result = analyse(encode(Image.new("RGB", (64, 64), (90, 90, 90))), settings, model="mine")
    [found] = result.detections
    assert (result.model_name, result.model_version, found.label) == ("mine", "7", "b")
    assert found.score == pytest.approx(0.72)
    # (-4, -4, 12, 12) in the 32 x 32 input, clipped, then x2 back to the 64 x 64 photo
    box = found.box
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((0, 0, 24, 24))


def test_labels_that_do_not_match_the_class_count_stop_the_worker(tmp_path: Path) -> None:
    model = user_folder(tmp_path, "model.onnx", {"format": "yolox_onnx"}, ["a", "b", "c"])
    save_yolox_layout_onnx(model, classes=2)
    settings = model_settings({"mine": model.parent})
    with pytest.raises(SystemExit, match=r"model\.onnx: output shape \(1, 21, 7\) is not"):
        check_models(settings)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not an onnx file", "not a loadable ONNX model"), (None, "no yolox_nano.onnx in")],
)
def test_a_bad_yolox_file_stops_the_worker_naming_it(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    folder = tmp_path / "yolox-nano"
    folder.mkdir()
    if content is not None:
        (folder / "yolox_nano.onnx").write_bytes(content)
    with pytest.raises(SystemExit, match=message) as caught:
        check_models(model_settings({"yolox-nano": folder}))
    assert "yolox_nano.onnx" in str(caught.value)


# --- TFLite, the four-output SSD / EfficientDet-Lite layout --------------------------------
def save_four_output_tflite(path: Path, input_dtype: Any) -> None:
    """A (1, 48, 64, 3) TFLite detector: one box over the middle half, class 1, its score the
    image's brightness; and a class-0 box scoring 0.99 that `count` leaves out."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, 48, 64, 3], input_dtype, name="images")

    def serve(images: Any) -> dict[str, Any]:
        pixels = tf.cast(images, tf.float32)
        mean = tf.reduce_mean(pixels)  # uint8 0..255, or float scaled to -1..1
        brightness = mean / 255.0 if input_dtype == tf.uint8 else (mean + 1.0) / 2.0
        return {
            "detection_boxes": tf.constant([[[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]]]),
            "detection_classes": tf.constant([[1.0, 0.0]]),
            "detection_scores": tf.stack([[brightness, 0.99]]),
            "num_detections": tf.constant([1.0]),
        }

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[spec])
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    path.write_bytes(converter.convert())


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_a_four_output_tflite_detector(tmp_path: Path, dtype: str) -> None:
    import tensorflow as tf

    model = user_folder(tmp_path, "model.tflite", {"format": "tflite_ssd"}, ["cat", "dog"])
    save_four_output_tflite(model, getattr(tf, dtype))
    settings = model_settings({"mine": model.parent})
    check_models(settings)
    white = encode(Image.new("RGB", (400, 300), (255, 255, 255)), "PNG")
    result = analyse(white, settings, model="mine")
    [dog] = result.detections
    assert dog.label == "dog" and dog.score == pytest.approx(1.0, abs=0.01)
    assert (dog.box.x_min, dog.box.y_min, dog.box.x_max, dog.box.y_max) == pytest.approx(
        (100, 75, 300, 225)
    )
    assert result.model_version.startswith("sha256-")
    black = encode(Image.new("RGB", (400, 300)), "PNG")
    assert analyse(black, settings, model="mine").detections == []  # below the threshold
    grey = encode(Image.new("RGB", (400, 300), (51, 51, 51)), "PNG")  # scores 0.2
    assert analyse(grey, settings, model="mine").detections == []
    [low] = analyse(grey, settings, model="mine", min_score=0.1).detections  # asked for
    assert low.label == "dog" and low.score == pytest.approx(0.2, abs=0.01)


def test_a_tflite_file_of_another_layout_stops_the_worker(tmp_path: Path) -> None:
    model = user_folder(tmp_path, "model.tflite", {"format": "tflite_ssd"}, ["cat"])
    nanodet = ROOT / "ml-storages" / "models" / "nanodet-g-416" / "model.tflite"
    need(nanodet.is_file(), "no converted NanoDet: run `make model`")
    shutil.copy(nanodet, model)  # a real TFLite model, but six head outputs
    with pytest.raises(SystemExit, match=r"model\.tflite: not a four-output TFLite detector"):
        check_models(model_settings({"mine": model.parent}))
    with pytest.raises(DetectorUnavailable):
        build_detector(model_settings({"mine": model.parent}), "mine")
