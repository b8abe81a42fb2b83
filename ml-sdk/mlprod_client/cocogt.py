"""Detections as COCO's results list, in the ids of a ground truth file (`--coco-gt`).

`pycocotools`' `COCO.loadRes` reads a plain list of `{image_id, category_id, bbox, score}`,
whose ids must be the ground truth's: images are matched by file name (the path given, else
its last part), categories by name. `COCOeval` then scores the list as it is.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class GroundTruthError(ValueError):
    """The file is not a COCO annotations file."""


@dataclass(frozen=True)
class GroundTruth:
    """A COCO annotations file's image ids by file name and category ids by name."""

    image_ids: dict[str, int]
    category_ids: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        try:
            data = json.loads(path.read_bytes())
            images = {str(i["file_name"]): int(i["id"]) for i in data["images"]}
            categories = {str(c["name"]): int(c["id"]) for c in data["categories"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise GroundTruthError(
                f"{path}: not a COCO annotations file (images with id and file_name, "
                f"categories with id and name): {exc!r}"
            ) from exc
        return cls(images, categories)

    def image_id(self, name: str) -> int | None:
        found = self.image_ids.get(name)
        return found if found is not None else self.image_ids.get(posixpath.basename(name))


@dataclass
class Results:
    """The results list, and what could not go into it."""

    detections: list[dict[str, Any]] = field(default_factory=list)
    unmatched_images: list[str] = field(default_factory=list)  # no such file name in the GT
    unknown_classes: set[str] = field(default_factory=set)  # labels the GT has no category of


def coco_results(export: dict[str, Any], truth: GroundTruth) -> Results:
    """The detections of a COCO detection export (the API's `format=coco`) as a results list
    in `truth`'s image and category ids."""
    out = Results()
    image_ids: dict[int, int] = {}
    for image in export["images"]:
        found = truth.image_id(image["file_name"])
        if found is None:
            out.unmatched_images.append(image["file_name"])
        else:
            image_ids[image["id"]] = found
    labels = {c["id"]: c["name"] for c in export["categories"]}
    for ann in export["annotations"]:
        label = labels[ann["category_id"]]
        category = truth.category_ids.get(label)
        if category is None:
            out.unknown_classes.add(label)
        elif ann["image_id"] in image_ids:
            out.detections.append({
                "image_id": image_ids[ann["image_id"]], "category_id": category,
                "bbox": ann["bbox"], "score": ann["score"],
            })  # fmt: skip
    return out
