"""One results file from the exports of several batches (the CLI sends a folder in chunks)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def merge_exports(fmt: str, exports: Sequence[bytes]) -> bytes:
    """JSON Lines joined; CSV with one header; Label Studio's task lists joined; COCO with
    image and annotation ids renumbered."""
    if fmt == "jsonl":
        return b"".join(exports)
    if fmt == "labelstudio":
        return json.dumps([task for e in exports for task in json.loads(e)]).encode()
    if fmt == "csv":
        header, rows = b"", []
        for export in exports:
            first, _, rest = export.partition(b"\n")
            header = header or first + b"\n"
            rows.append(rest)
        return header + b"".join(rows)
    return json.dumps(merge_coco([json.loads(e) for e in exports])).encode()


def merge_coco(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"info": {"description": "mlprod detections"}, "images": [],
                              "annotations": [], "categories": []}  # fmt: skip
    categories: dict[int, dict[str, Any]] = {}
    for part in parts:
        new_ids = {}
        for image in part["images"]:
            new_ids[image["id"]] = len(merged["images"]) + 1
            merged["images"].append({**image, "id": new_ids[image["id"]]})
        for ann in part["annotations"]:
            merged["annotations"].append(
                {**ann, "id": len(merged["annotations"]) + 1, "image_id": new_ids[ann["image_id"]]}
            )
        categories.update({c["id"]: c for c in part["categories"]})
    merged["categories"] = [categories[i] for i in sorted(categories)]
    return merged
