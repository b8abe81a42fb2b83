"""Results in the formats people read and score: JSON Lines, CSV (one row per detection), COCO
detection JSON, and a zip of the annotated images (labelling tools' formats: labelformats)."""

from __future__ import annotations

import csv
import io
import json
import posixpath
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO

from ml_api.annotate import annotated_image
from ml_common.coco import COCO_80_LABELS, COCO_80_TO_91
from ml_common.schemas import Detection, TaskState, TaskStatus
from ml_common.storage import Storage


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    coco = "coco"
    zip = "zip"
    labelstudio = "labelstudio"
    yolo = "yolo"
    voc = "voc"


MEDIA_TYPES = {
    ExportFormat.jsonl: "application/x-ndjson",
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.coco: "application/json",
    ExportFormat.zip: "application/zip",
    ExportFormat.labelstudio: "application/json",
    ExportFormat.yolo: "application/zip",
    ExportFormat.voc: "application/zip",
}
SUFFIXES = {
    ExportFormat.jsonl: ".jsonl",
    ExportFormat.csv: ".csv",
    ExportFormat.coco: ".coco.json",
    ExportFormat.zip: ".zip",
    ExportFormat.labelstudio: ".labelstudio.json",
    ExportFormat.yolo: ".yolo.zip",
    ExportFormat.voc: ".voc.zip",
}
CSV_COLUMNS = (
    "file_name", "task_id", "status", "width", "height", "label", "class_id", "score",
    "x_min", "y_min", "x_max", "y_max", "error",
)  # fmt: skip


@dataclass(frozen=True)
class ExportItem:
    """One task as exported: its status, the uploaded file's name and where the upload is."""

    status: TaskStatus
    file_name: str
    upload_key: str = ""

    @property
    def name(self) -> str:
        return self.file_name or self.status.task_id


def jsonl_lines(items: Iterable[ExportItem]) -> Iterator[str]:
    """One JSON object per task: its file name, state, result or error."""
    for item in items:
        line = {
            "file_name": item.name,
            "task_id": item.status.task_id,
            "status": item.status.status.value,
            "result": item.status.result.model_dump(mode="json") if item.status.result else None,
            "error": item.status.error.model_dump() if item.status.error else None,
        }
        yield json.dumps(line, separators=(",", ":")) + "\n"


# what makes a spreadsheet read a cell as a formula (OWASP's CSV injection list, and the
# full-width forms some locales of Excel also take), at its start or after leading blanks
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, prefixed with `'` (OWASP) so it is
    shown as text; numbers (a negative coordinate) and other text are left alone."""
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_rows(item: ExportItem) -> Iterator[list[object]]:
    return ([neutralise_cell(cell) for cell in row] for row in _raw_csv_rows(item))


def _raw_csv_rows(item: ExportItem) -> Iterator[list[object]]:
    status, result = item.status, item.status.result
    head: list[object] = [item.name, status.task_id, status.status.value]
    size: list[object] = [result.width, result.height] if result else ["", ""]
    error = f"{status.error.type}: {status.error.message}" if status.error else ""
    if result is None or not result.detections:  # the file still gets its one row
        yield [*head, *size, "", "", "", "", "", "", "", error]
        return
    for d in result.detections:
        box = [round(v, 2) for v in (d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max)]
        yield [*head, *size, d.label, d.class_id, round(d.score, 4), *box, error]


def csv_lines(items: Iterable[ExportItem]) -> Iterator[str]:
    """A header, then one row per detection (a file without any gets one row of its own)."""
    buf = io.StringIO()
    # CRLF (RFC 4180): the writer then quotes any cell holding a CR, which a reader would
    # otherwise take for the end of the row, and the rest of the cell for a new row
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerows(_csv_rows(item))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def coco_detections(items: Sequence[ExportItem]) -> dict[str, Any]:
    """COCO's detection format: images, annotations (with scores) and categories.

    Category ids are COCO's own (person 1 … toothbrush 90) when every detection is one of the
    80 COCO classes, so the export scores against COCO ground truth as it is; for a model with
    its own class list they are its class ids plus one. Only succeeded tasks appear;
    `pycocotools.COCO` loads it, and `loadRes(export["annotations"])` too."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[int, str] = {}
    category_id = _category_ids(items)
    for image_id, item in enumerate(items, start=1):
        result = item.status.result
        if item.status.status is not TaskState.succeeded or result is None:
            continue
        images.append(
            {"id": image_id, "file_name": item.name, "width": result.width, "height": result.height}
        )
        for d in result.detections:
            categories[category_id(d)] = d.label
            w, h = d.box.x_max - d.box.x_min, d.box.y_max - d.box.y_min
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id(d),
                "bbox": [round(v, 2) for v in (d.box.x_min, d.box.y_min, w, h)],
                "area": round(w * h, 2), "score": round(d.score, 4), "iscrowd": 0,
            })  # fmt: skip
    return {
        "info": {"description": "mlprod detections"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in sorted(categories.items())],
    }


def _category_ids(items: Sequence[ExportItem]) -> Callable[[Detection], int]:
    """COCO's ids if every detection is a COCO-80 class (by index and name), else class id + 1."""
    detections = [d for item in items if item.status.result for d in item.status.result.detections]
    if all(
        d.class_id < len(COCO_80_LABELS) and COCO_80_LABELS[d.class_id] == d.label
        for d in detections
    ):
        return lambda d: COCO_80_TO_91[d.class_id]
    return lambda d: d.class_id + 1


def _relative(name: str) -> str:
    """`name` as a relative path inside an archive: no root, no `..`, forward slashes."""
    parts = name.replace("\\", "/").split("/")
    return "/".join(p for p in parts if p not in ("", ".", ".."))


def unique_names(names: Iterable[str], suffix: str) -> Iterator[str]:
    """`name` (made relative) with its extension replaced by `suffix`, numbered where two
    would clash."""
    seen: set[str] = set()
    for name in names:
        stem = posixpath.splitext(_relative(name))[0] or "image"
        candidate, n = f"{stem}{suffix}", 1
        while candidate in seen:
            n += 1
            candidate = f"{stem}-{n}{suffix}"
        seen.add(candidate)
        yield candidate


def write_annotated_zip(
    items: Sequence[ExportItem], storage: Storage, max_pixels: int, out: BinaryIO
) -> None:
    """A zip of the succeeded tasks' annotated images, named after the uploaded files."""
    done = [i for i in items if i.status.result is not None and i.upload_key]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:  # JPEGs
        for item, name in zip(done, unique_names((i.name for i in done), ".jpg"), strict=True):
            assert item.status.result is not None
            detections = item.status.result.processed_detections()
            image = annotated_image(storage, item.upload_key, detections, max_pixels)
            archive.writestr(name, image)
