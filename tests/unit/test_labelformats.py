"""Label Studio tasks, YOLO labels and Pascal VOC XML (ml_api.labelformats): globox, a reader of
the detection formats, loads the YOLO and VOC files back; Label Studio's own SDK validates the
tasks in the integration test (it needs a venv of its own)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from ml_api.exports import ExportItem
from ml_api.labelformats import class_names, labels_zip, labelstudio_json, voc_xml, yolo_lines
from ml_common.coco import COCO_80_LABELS
from ml_common.schemas import Box, Detection, DetectionResult, Links, TaskState, TaskStatus
from tests.unit.test_exports import failed

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)
LINKS = Links(self="s", image="i", events="e")
WIDTH, HEIGHT = 640, 480
# Label Studio's object detection template, with the names labelformats gives its regions
LS_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">{labels}</RectangleLabels>
</View>"""


def box(label: str, class_id: int, x0: float, y0: float, x1: float, y1: float) -> Detection:
    pixels = Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1)
    fractions = Box(x_min=x0 / WIDTH, y_min=y0 / HEIGHT, x_max=x1 / WIDTH, y_max=y1 / HEIGHT)
    return Detection(label=label, class_id=class_id, score=0.87654321, box=pixels,
                     box_normalized=fractions)  # fmt: skip


def done(task_id: str, *detections: Detection) -> TaskStatus:
    result = DetectionResult(
        width=WIDTH, height=HEIGHT, model_name="nanodet-g-416", model_version="1",
        inference_ms=1.0, detections=list(detections),
    )  # fmt: skip
    return TaskStatus(task_id=task_id, status=TaskState.succeeded, created_at=NOW,
                      result=result, links=LINKS)  # fmt: skip


ITEMS = [
    ExportItem(done("t1", box("person", 0, 64, 48, 320, 480), box("cat", 15, 0, 0, 640, 240)),
               "a.jpg"),
    ExportItem(done("t2"), "b.jpg"),  # nothing found: an empty label file
    ExportItem(failed("t3"), "notes.txt"),  # failed: in no export
]  # fmt: skip


def test_yolo_lines_are_centre_and_size_in_fractions() -> None:
    result = ITEMS[0].status.result
    assert result is not None
    assert yolo_lines(result).splitlines() == [
        "0 0.300000 0.550000 0.400000 0.900000",
        "15 0.500000 0.250000 1.000000 0.500000",
    ]


def test_class_names_are_cocos_for_a_coco_model_else_the_results() -> None:
    assert class_names(ITEMS) == list(COCO_80_LABELS)
    own = [ExportItem(done("t", box("bolt", 2, 0, 0, 10, 10)), "x.jpg")]
    assert class_names(own) == ["class0", "class1", "bolt"]


def test_label_studio_tasks_hold_the_boxes_as_predictions() -> None:
    """Label Studio's own LabelInterface validates them on a live stack (integration:
    test_min_score_and_formats, in a venv of its own); here, the values."""
    tasks = json.loads(labelstudio_json(ITEMS))
    assert [t["data"]["image"] for t in tasks] == ["a.jpg", "b.jpg"]
    [prediction] = tasks[0]["predictions"]
    assert prediction["model_version"] == "nanodet-g-416 1" and prediction["score"] == 0.8765
    region = prediction["result"][0]
    assert region["value"] == {"x": 10.0, "y": 10.0, "width": 40.0, "height": 90.0,
                               "rotation": 0, "rectanglelabels": ["person"]}  # fmt: skip
    assert (region["from_name"], region["to_name"], region["type"]) == (
        "label", "image", "rectanglelabels"
    )  # fmt: skip
    assert (region["original_width"], region["original_height"], region["score"]) == (
        WIDTH, HEIGHT, 0.8765
    )  # fmt: skip
    assert tasks[1]["predictions"][0]["result"] == []


def _unzip(data: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)
    return folder


def test_yolo_labels_load_with_globox(tmp_path: Path) -> None:
    from globox import AnnotationSet

    folder = _unzip(labels_zip(ITEMS, "yolo"), tmp_path / "yolo")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.txt")) == [
        "classes.txt",
        "labels/a.txt",
        "labels/b.txt",
    ]
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):  # globox reads each image's size from its file
        Image.new("RGB", (WIDTH, HEIGHT)).save(images / name)
    names = (folder / "classes.txt").read_text().splitlines()
    loaded = AnnotationSet.from_yolo_darknet(folder / "labels", image_folder=images)
    loaded.map_labels({str(i): name for i, name in enumerate(names)})
    boxes = {
        (ann.image_id, b.label): tuple(round(v) for v in b.ltrb)
        for ann in loaded
        for b in ann.boxes
    }
    assert boxes == {("a.jpg", "person"): (64, 48, 320, 480), ("a.jpg", "cat"): (0, 0, 640, 240)}
    assert not next(a for a in loaded if a.image_id == "b.jpg").boxes


def test_voc_xml_loads_with_globox(tmp_path: Path) -> None:
    from globox import AnnotationSet

    folder = _unzip(labels_zip(ITEMS, "voc"), tmp_path / "voc")
    loaded = AnnotationSet.from_pascal_voc(folder / "Annotations")
    by_image = {ann.image_id: ann for ann in loaded}
    assert set(by_image) == {"a.jpg", "b.jpg"}
    assert by_image["a.jpg"].image_size == (WIDTH, HEIGHT)
    boxes = {b.label: b.ltrb for b in by_image["a.jpg"].boxes}
    assert boxes == {"person": (65, 49, 320, 480), "cat": (1, 1, 640, 240)}
    assert by_image["b.jpg"].boxes == []


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_a_failed_item_is_in_no_label_file(fmt: str) -> None:
    with zipfile.ZipFile(io.BytesIO(labels_zip(ITEMS, fmt))) as archive:
        assert not [n for n in archive.namelist() if "notes" in n]


def test_a_name_or_label_xml_cannot_hold_still_makes_valid_xml() -> None:
    from xml.etree import ElementTree

    result = done("t", box("a\x0bb", 1, 0, 0, 10, 10)).result
    assert result is not None
    root = ElementTree.fromstring(voc_xml("dir/a\x0bb\x1fc.jpg", result))
    assert (root.findtext("folder"), root.findtext("filename")) == ("dir", "a_b_c.jpg")
    assert root.findtext("object/name") == "a_b"
