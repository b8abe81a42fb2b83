"""What `mlprod detect` writes into its output folder, from the exports of its batches (or of
its one task): one results file, or a folder of per-image files (YOLO, Pascal VOC)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlprod_client.cocogt import GroundTruth, coco_results
from mlprod_client.merge import merge_coco, merge_exports

# where each format goes in the output folder; a name ending in "/" is a folder of files
OUTPUTS = {
    "jsonl": "results.jsonl",
    "csv": "results.csv",
    "coco": "results.coco.json",
    "labelstudio": "results.labelstudio.json",
    "yolo": "yolo/",
    "voc": "voc/",
    "zip": "annotated/",  # the annotated images (--annotated)
}
FORMATS = tuple(f for f in OUTPUTS if f != "zip")  # what --format takes
FOLDERS = frozenset(f for f, name in OUTPUTS.items() if name.endswith("/"))


@dataclass
class Written:
    """Where the results went, and what the summary should say about them."""

    path: Path
    notes: list[str] = field(default_factory=list)


def write_results(
    fmt: str, exports: Sequence[bytes], out: Path, truth: GroundTruth | None = None
) -> Written:
    """Write the exports (one per batch) as the format's one file or folder in `out`; with
    `truth`, COCO as the results list in its ids (cocogt)."""
    target = out / OUTPUTS[fmt]
    if fmt in FOLDERS:
        target.mkdir(parents=True, exist_ok=True)
        for export in exports:
            with zipfile.ZipFile(io.BytesIO(export)) as archive:
                archive.extractall(target)  # names were made safe by the API
        return Written(target)
    if fmt == "coco" and truth is not None:
        results = coco_results(merge_coco([json.loads(e) for e in exports]), truth)
        target.write_text(json.dumps(results.detections))
        return Written(target, _coco_notes(results.unmatched_images, results.unknown_classes))
    target.write_bytes(merge_exports(fmt, exports))
    return Written(target)


def _coco_notes(unmatched: Sequence[str], unknown: set[str]) -> list[str]:
    notes = []
    if unmatched:
        more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        notes.append(f"not in the ground truth, left out: {', '.join(unmatched[:10])}{more}")
    if unknown:
        notes.append(f"classes the ground truth has not, left out: {', '.join(sorted(unknown))}")
    return notes
