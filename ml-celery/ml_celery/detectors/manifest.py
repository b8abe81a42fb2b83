"""A model folder's manifest (`model.json`): what a served model is and which files hold it.

Every field is optional. Built-in models (ml_common.models.CATALOG) fill in what their folder's
manifest leaves out, so a bare folder holding only the published file serves as it is; a model
the user trained says at least its `format`. Fields: name, version, format, file, labels (a
text file beside it, one class name a line), licence, source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from ml_common.coco import COCO_80_LABELS
from ml_common.errors import DetectorUnavailable
from ml_common.models import CATALOG, ModelFormat
from ml_common.settings import Settings

METADATA_FILE = "model.json"  # read here only (read_manifest); written by model_prep
DEFAULT_FILES: dict[str, str] = {
    "yolox_onnx": "model.onnx",
    "tflite_ssd": "model.tflite",
    "tf_od_api": "saved_model.pb",
    "nanodet": "model.tflite",
}


@dataclass(frozen=True)
class Manifest:
    """A served model: its name, version, format, main file and class names."""

    name: str
    version: str
    format: ModelFormat
    folder: Path
    file: Path
    labels: tuple[str, ...]


@dataclass(frozen=True)
class RunOptions:
    """How a detector is named (from its manifest) and run (from the settings): the one way
    the score threshold reaches every runtime."""

    name: str
    version: str
    labels: tuple[str, ...]
    score_threshold: float
    max_detections: int = 100
    intra_op_threads: int = 0
    iou_threshold: float = 0.5  # NanoDet's NMS (YOLOX keeps the one it was trained with)

    @classmethod
    def of(cls, manifest: Manifest, settings: Settings) -> RunOptions:
        return cls(
            manifest.name,
            manifest.version,
            manifest.labels,
            settings.score_threshold,
            settings.max_detections,
            settings.intra_op_threads,
            settings.iou_threshold,
        )


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetectorUnavailable(f"{path}: not a readable JSON manifest: {exc}") from exc
    if not isinstance(meta, dict):
        raise DetectorUnavailable(f"{path}: the manifest must be a JSON object")
    return meta


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names, one a line (blank lines skipped); raises naming the file when unreadable."""
    try:
        labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectorUnavailable(f"{path}: labels file not readable: {exc}") from exc
    if not labels:
        raise DetectorUnavailable(f"{path}: labels file has no class names")
    return labels


def file_version(path: Path) -> str:
    """A version for a model file without one: the first 12 hex digits of its sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256-{digest.hexdigest()[:12]}"


def _format(meta: dict[str, Any], model: str, settings: Settings, folder: Path) -> ModelFormat:
    value = meta.get("format") or (CATALOG[model].format if model in CATALOG else None)
    value = str(value or settings.detector)
    formats: tuple[ModelFormat, ...] = get_args(ModelFormat)
    for known in formats:
        if value == known:
            return known
    raise DetectorUnavailable(
        f"{folder / METADATA_FILE}: format {value!r} is not one of {', '.join(formats)}"
    )


def read_manifest(model: str, folder: Path, settings: Settings) -> Manifest:
    """The manifest of `model` in `folder`; raises DetectorUnavailable naming the missing or
    unreadable file (the worker checks this at start, never at its first task)."""
    meta = _read_json(folder)
    fmt = _format(meta, model, settings, folder)
    spec = CATALOG.get(model)
    default_file = spec.file if spec is not None and spec.file else DEFAULT_FILES[fmt]
    if fmt == "nanodet" and settings.runtime == "savedmodel":
        default_file = "saved_model.pb"
    file = folder / str(meta.get("file") or default_file)
    if not file.is_file():
        raise DetectorUnavailable(
            f"no {file.name} in {folder}: run `make model MODEL={model}` to prepare it"
        )
    labels = read_labels(folder / str(meta["labels"])) if meta.get("labels") else COCO_80_LABELS
    version = str(meta.get("version") or "") or (
        file_version(file) if fmt != "tf_od_api" else "unversioned"
    )
    return Manifest(model, version, fmt, folder, file, labels)
