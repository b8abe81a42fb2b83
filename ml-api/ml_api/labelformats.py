"""Results in the formats labelling and training tools load: Label Studio tasks with
predictions (pre-annotations), YOLO txt labels and Pascal VOC XML, one file per image in a zip
for the last two. Only succeeded tasks appear, as in the COCO export."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from ml_api.exports import ExportItem, unique_names
from ml_common.coco import COCO_80_LABELS
from ml_common.schemas import Detection, DetectionResult, TaskState

# the names a Label Studio labelling config gives its image and its RectangleLabels; the
# README's config uses them: <Image name="image" value="$image"/>,
# <RectangleLabels name="label" toName="image">
LS_IMAGE, LS_LABELS = "image", "label"
# what XML 1.0 cannot hold, even escaped (control characters other than tab, CR and LF)
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
YOLO_CLASSES = "classes.txt"  # one class name a line, line n is class n (darknet, LabelImg)


def _succeeded(items: Sequence[ExportItem]) -> Iterator[tuple[ExportItem, DetectionResult]]:
    for item in items:
        result = item.status.result
        if item.status.status is TaskState.succeeded and result is not None:
            yield item, result


def _fraction(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _ls_region(task_id: str, n: int, d: Detection, result: DetectionResult) -> dict[str, Any]:
    b = d.box_normalized
    x, y = _fraction(b.x_min), _fraction(b.y_min)
    width, height = _fraction(b.x_max) - x, _fraction(b.y_max) - y
    return {
        "id": f"{task_id[:8]}-{n}",
        "type": "rectanglelabels",
        "from_name": LS_LABELS,
        "to_name": LS_IMAGE,
        "original_width": result.width,
        "original_height": result.height,
        "image_rotation": 0,
        "value": {
            # percentages of the image's width and height, as Label Studio keeps them
            "x": round(x * 100, 4),
            "y": round(y * 100, 4),
            "width": round(width * 100, 4),
            "height": round(height * 100, 4),
            "rotation": 0,
            "rectanglelabels": [d.label],
        },
        "score": round(d.score, 4),
    }


def labelstudio_tasks(items: Sequence[ExportItem]) -> list[dict[str, Any]]:
    """Label Studio's import format: a task per image (`data.image` is the uploaded file's
    name: point it at where Label Studio serves the images) with one prediction holding the
    boxes, which Label Studio shows as pre-annotations."""
    tasks = []
    for item, result in _succeeded(items):
        task_id = item.status.task_id
        regions = [_ls_region(task_id, n, d, result) for n, d in enumerate(result.detections)]
        scores = [d.score for d in result.detections]
        prediction = {
            "model_version": f"{result.model_name} {result.model_version}",
            "score": round(sum(scores) / len(scores), 4) if scores else 0.0,
            "result": regions,
        }
        tasks.append({
            "data": {LS_IMAGE: item.name}, "meta": {"mlprod_task_id": task_id},
            "predictions": [prediction],
        })  # fmt: skip
    return tasks


def labelstudio_json(items: Sequence[ExportItem]) -> str:
    return json.dumps(labelstudio_tasks(items), separators=(",", ":"))


def class_names(items: Sequence[ExportItem]) -> list[str]:
    """Class names by class id: COCO's 80 for a COCO model, else those the results name
    (`class<N>` for an id none of them has)."""
    named = {d.class_id: d.label for _, r in _succeeded(items) for d in r.detections}
    if all(i < len(COCO_80_LABELS) and COCO_80_LABELS[i] == n for i, n in named.items()):
        return list(COCO_80_LABELS)
    return [named.get(i, f"class{i}") for i in range(max(named, default=-1) + 1)]


def yolo_lines(result: DetectionResult) -> str:
    """`class x_center y_center width height` a box, fractions of the image (YOLO labels)."""
    lines = []
    for d in result.detections:
        b = d.box_normalized
        x0, y0, x1, y1 = (_fraction(v) for v in (b.x_min, b.y_min, b.x_max, b.y_max))
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        lines.append(f"{d.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def voc_xml(name: str, result: DetectionResult) -> bytes:
    """One image's Pascal VOC annotation (pixel corners, 1-based, within the image); the
    file's folder, if it had one, in `folder`; a character XML cannot hold becomes `_`."""
    root = ET.Element("annotation")
    folder, _, filename = NOT_XML.sub("_", name).rpartition("/")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", result.width), ("height", result.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for d in result.detections:
        obj = ET.SubElement(root, "object")
        label = NOT_XML.sub("_", d.label)
        for tag, text in (("name", label), ("pose", "Unspecified"), ("truncated", "0"),
                          ("difficult", "0")):  # fmt: skip
            ET.SubElement(obj, tag).text = text
        box = ET.SubElement(obj, "bndbox")
        b, w, h = d.box, result.width, result.height
        x0, y0 = min(max(round(b.x_min) + 1, 1), w), min(max(round(b.y_min) + 1, 1), h)
        x1, y1 = min(max(round(b.x_max), x0), w), min(max(round(b.y_max), y0), h)
        for tag, value in (("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def labels_zip(items: Sequence[ExportItem], fmt: str) -> bytes:
    """A zip of a YOLO txt file per succeeded image in labels/ and the class names in
    classes.txt (`fmt` "yolo"), or of a Pascal VOC XML file per image in Annotations/ ("voc"),
    each named after its image, as the two formats' datasets lay them out."""
    done = list(_succeeded(items))
    folder, suffix = ("labels/", ".txt") if fmt == "yolo" else ("Annotations/", ".xml")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        names = unique_names((item.name for item, _ in done), suffix)
        for (item, result), name in zip(done, names, strict=True):
            body = yolo_lines(result).encode() if fmt == "yolo" else voc_xml(item.name, result)
            archive.writestr(folder + name, body)
        if fmt == "yolo":
            archive.writestr(YOLO_CLASSES, "".join(f"{n}\n" for n in class_names(items)))
    return buf.getvalue()
