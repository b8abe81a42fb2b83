"""A user's TFLite detector with the standard four outputs (the SSD / EfficientDet-Lite layout).

Input (1, H, W, 3) RGB, uint8 as it is or float32 scaled to -1..1 (the SSD convention); the
image is stretched to H x W. Outputs, as TFLite_Detection_PostProcess gives them: boxes
(1, N, 4) normalised ymin, xmin, ymax, xmax; classes (1, N) 0-based indices into the labels;
scores (1, N); count (1,). Outputs are told apart by their names (box, class, score, num or
count) where the model has them, else boxes by shape and the rest in that order.
NMS is the model's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ml_celery.detectors.base import DetectionOutput
from ml_celery.detectors.litert import load_interpreter
from ml_celery.detectors.manifest import RunOptions
from ml_celery.detectors.postprocess import above_threshold, to_detections
from ml_celery.detectors.preprocess import Geometry, Source
from ml_common.errors import DetectorUnavailable

ROLES = ("boxes", "classes", "scores", "count")
ROLE_WORDS = {
    "boxes": ("box",),
    "classes": ("class",),
    "scores": ("score",),
    "count": ("num", "count"),
}


def output_roles(details: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Which output index is boxes, classes, scores and count."""
    by_name = {
        role: i
        for role, words in ROLE_WORDS.items()
        for i, detail in enumerate(details)
        if any(word in str(detail["name"]).lower() for word in words)
    }
    if len(by_name) == 4 and len(set(by_name.values())) == 4:
        return by_name
    boxes = [i for i, d in enumerate(details) if len(d["shape"]) == 3 and d["shape"][-1] == 4]
    rest = [i for i in range(len(details)) if i not in boxes]
    count = [i for i in rest if int(np.prod(details[i]["shape"])) == 1]
    pair = [i for i in rest if i not in count]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        raise ValueError("not the four outputs boxes (1, N, 4), classes, scores, count")
    return {"boxes": boxes[0], "classes": pair[0], "scores": pair[1], "count": count[0]}


class TFLiteSSDDetector:
    """A four-output TFLite detector on LiteRT; `labels[i]` names class index i."""

    def __init__(self, model_file: Path, options: RunOptions) -> None:
        self.name, self.version = options.name, options.version
        self.labels = options.labels
        self.score_threshold = options.score_threshold
        self.max_detections = options.max_detections
        threads = options.intra_op_threads or os.cpu_count() or 1
        try:
            self._interpreter = load_interpreter(model_file, threads)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            outputs = self._interpreter.get_output_details()
            self._outputs = {role: outputs[i]["index"] for role, i in output_roles(outputs).items()}
        except (ValueError, RuntimeError) as exc:
            raise DetectorUnavailable(
                f"{model_file}: not a four-output TFLite detector: {exc}"
            ) from exc
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[3] != 3:
            raise DetectorUnavailable(f"{model_file}: input shape {shape} is not (1, H, W, 3)")
        self.input_height, self.input_width = shape[1], shape[2]

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        return min(width, self.input_width), min(height, self.input_height)

    def _infer(self, batch: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return {role: self._interpreter.get_tensor(i) for role, i in self._outputs.items()}

    def _batch(self, image: Image.Image, source: Source | None) -> npt.NDArray[Any]:
        size = (self.input_width, self.input_height)
        box = source.box if source is not None else None
        pixels = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR, box=box))
        if self._input["dtype"] == np.uint8:
            return pixels[np.newaxis].astype(np.uint8)
        return ((pixels.astype(np.float32) - 127.5) / 127.5)[np.newaxis]

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        start = time.perf_counter()
        batch = self._batch(image, source)
        preprocess_ms, start = _ms(start), time.perf_counter()
        out = self._infer(batch)
        inference_ms, start = _ms(start), time.perf_counter()
        width, height = (source.width, source.height) if source else image.size
        count = int(np.asarray(out["count"]).ravel()[0])
        scores = out["scores"].reshape(-1)[:count].astype(np.float32)
        class_ids = np.rint(out["classes"].reshape(-1)[:count]).astype(np.int64)
        known = (class_ids >= 0) & (class_ids < len(self.labels))
        threshold = self.score_threshold if min_score is None else min_score
        keep = np.flatnonzero(above_threshold(scores, threshold) & known)
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.max_detections]
        y0, x0, y1, x1 = out["boxes"].reshape(-1, 4)[keep].astype(np.float32).T
        boxes = np.stack([x0 * width, y0 * height, x1 * width, y1 * height], axis=1)
        identity = Geometry(width, height, 1.0, 1.0, 0.0, 0.0)
        detections = to_detections(boxes, scores[keep], class_ids[keep], identity, self.labels)
        return DetectionOutput(detections, preprocess_ms, inference_ms, _ms(start))

    def warm_up(self) -> None:
        self._infer(np.zeros(self._input["shape"], dtype=self._input["dtype"]))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
