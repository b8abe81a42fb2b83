"""Exports (JSON Lines, CSV, COCO, annotated zip) and the SDK's merge of several batches."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from ml_api.exports import (
    ExportItem,
    coco_detections,
    csv_lines,
    jsonl_lines,
    unique_names,
    write_annotated_zip,
)
from ml_common.schemas import (
    Box,
    Detection,
    DetectionResult,
    Links,
    TaskError,
    TaskState,
    TaskStatus,
)
from ml_common.storage import LocalStorage
from mlprod_client.merge import merge_exports

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)
LINKS = Links(self="s", image="i", events="e")


def cat(x: float = 10) -> Detection:
    box = Box(x_min=x, y_min=5, x_max=x + 20, y_max=25)
    return Detection(label="cat", class_id=15, score=0.9, box=box, box_normalized=box)


def done(task_id: str, *detections: Detection) -> TaskStatus:
    result = DetectionResult(width=64, height=48, model_name="m", model_version="1",
                             inference_ms=1.0, detections=list(detections))  # fmt: skip
    return TaskStatus(task_id=task_id, status=TaskState.succeeded, created_at=NOW,
                      result=result, links=LINKS)  # fmt: skip


def failed(task_id: str) -> TaskStatus:
    error = TaskError(type="unsupported_media_type", message="not an image")
    return TaskStatus(task_id=task_id, status=TaskState.failed, created_at=NOW, error=error,
                      links=LINKS)  # fmt: skip


ITEMS = [ExportItem(done("t1", cat(), cat(30)), "a.jpg"), ExportItem(done("t2"), "b.png"),
         ExportItem(failed("t3"), "notes.txt")]  # fmt: skip


def test_jsonl_has_every_item_once() -> None:
    lines = [json.loads(line) for line in jsonl_lines(ITEMS)]
    assert [x["file_name"] for x in lines] == ["a.jpg", "b.png", "notes.txt"]
    assert lines[2]["error"]["type"] == "unsupported_media_type" and lines[2]["result"] is None


def test_csv_one_row_per_detection_and_one_for_a_file_without() -> None:
    rows = list(csv.DictReader(io.StringIO("".join(csv_lines(ITEMS)))))
    assert [r["file_name"] for r in rows] == ["a.jpg", "a.jpg", "b.png", "notes.txt"]
    assert float(rows[1]["x_min"]) == 30 and rows[2]["label"] == "" and rows[3]["error"]


def test_coco_loads_with_pycocotools() -> None:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = coco_detections(ITEMS)
    coco.createIndex()
    assert len(coco.getImgIds()) == 2 and coco.loadCats(17)[0]["name"] == "cat"  # COCO's id
    results = coco.loadRes(coco.dataset["annotations"])
    assert results.loadAnns(results.getAnnIds())[0]["bbox"] == [10, 5, 20, 20]


def test_coco_ids_of_a_model_with_its_own_classes_are_class_id_plus_one() -> None:
    box = Box(x_min=1, y_min=1, x_max=9, y_max=9)
    widget = Detection(label="widget", class_id=3, score=0.8, box=box, box_normalized=box)
    export = coco_detections([ExportItem(done("t1", widget, cat()), "a.jpg")])
    assert {c["id"]: c["name"] for c in export["categories"]} == {4: "widget", 16: "cat"}


def test_names_keep_their_folder_and_never_clash() -> None:
    assert list(unique_names(["a.jpg", "a.png", "d/a.jpg", "", "/../../etc/x.jpg"], ".jpg")) == [
        "a.jpg", "a-2.jpg", "d/a.jpg", "image.jpg", "etc/x.jpg"
    ]  # fmt: skip


def test_annotated_zip_holds_the_succeeded_items(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key = storage.upload_key("0b3c9a6e-2f2a-4c1e-9d7b-1a2b3c4d5e6f", "jpg")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, format="JPEG")
    storage.write(key, buf.getvalue())
    items = [ExportItem(done("t1", cat()), "x/a.jpg", key), ITEMS[2]]
    out = io.BytesIO()
    write_annotated_zip(items, storage, 1_000_000, out)
    assert zipfile.ZipFile(out).namelist() == ["x/a.jpg"]


def test_merge_of_several_batches() -> None:
    first, second = coco_detections(ITEMS[:1]), coco_detections(ITEMS[1:])
    merged = json.loads(merge_exports("coco", [json.dumps(first).encode(),
                                               json.dumps(second).encode()]))  # fmt: skip
    assert [i["id"] for i in merged["images"]] == [1, 2]
    assert {a["image_id"] for a in merged["annotations"]} == {1}
    csvs = [("".join(csv_lines([item]))).encode() for item in ITEMS]
    assert merge_exports("csv", csvs).count(b"file_name,") == 1
    assert merge_exports("jsonl", [b"a\n", b"b\n"]) == b"a\nb\n"


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
            "\n=1", "  =1", "\uff1d1+1"]  # fmt: skip


def formula_cells(text: str) -> list[str]:
    """Every cell of a CSV that a spreadsheet would take as a formula."""
    cells = [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]
    return [c for c in cells if c.lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r", "\n",
                                                           "\uff1d"))]  # fmt: skip


def test_no_formula_survives_into_any_csv_cell() -> None:
    """A file name, a label or an error that starts like a formula is written as text."""
    evil = Detection(label="=cmd|' /C calc'!A0", class_id=0, score=0.5,
                     box=cat().box, box_normalized=cat().box)  # fmt: skip
    error = TaskError(type="-x", message="m")
    bad = TaskStatus(task_id="t9", status=TaskState.failed, created_at=NOW, error=error,
                     links=LINKS)  # fmt: skip
    items = [ExportItem(done(f"t{i}", evil), name) for i, name in enumerate(FORMULAS)]
    split = ExportItem(done("t10"), "a.jpg\r=1+1,\n@x")  # a CR or LF inside: no new row
    text = "".join(csv_lines([*items, ExportItem(bad, "@bad.jpg"), split]))
    assert formula_cells(text) == []
    names = [row["file_name"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    assert names == [f"'{name}" for name in FORMULAS] + ["'@bad.jpg", "a.jpg\r=1+1,\n@x"]
