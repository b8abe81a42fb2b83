"""YOLOX-family ONNX detectors through ONNX Runtime: letterbox, run, grid-decode, per-class NMS.

The published YOLOX ONNX files take a (1, 3, S, S) float32 BGR image in 0-255 (not normalised),
letterboxed at the top-left with grey (114) padding, and give (1, N, 5 + C): per anchor point
x, y, w, h (grid offsets and log sizes), objectness and C class scores, both already sigmoided.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ml_celery.detectors.base import DetectionOutput
from ml_celery.detectors.manifest import RunOptions
from ml_celery.detectors.postprocess import (
    MAX_CANDIDATES,
    FloatArray,
    above_threshold,
    batched_nms,
    to_detections,
)
from ml_celery.detectors.preprocess import (
    Source,
    make_geometry,
    resized_size,
    topleft_bgr_input,
)
from ml_common.errors import DetectorUnavailable
from ml_common.schemas import Detection

STRIDES = (8, 16, 32)
PAD_VALUE = 114
# YOLOX's own evaluation NMS threshold (its demo and COCO eval use 0.65)
YOLOX_IOU_THRESHOLD = 0.65


@functools.cache
def anchor_points(input_size: int) -> tuple[FloatArray, FloatArray]:
    """The (N, 2) x, y grid cell of every anchor point over all strides, and (N, 1) its stride
    (made once per input size, read-only)."""
    grids, strides = [], []
    for stride in STRIDES:
        cells = input_size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((cells * cells, 1), stride))
    grid = np.concatenate(grids).astype(np.float32)
    stride_of = np.concatenate(strides).astype(np.float32)
    grid.flags.writeable = stride_of.flags.writeable = False
    return grid, stride_of


def decode_yolox(
    raw: FloatArray, input_size: int, score_threshold: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """(N, 5 + C) raw output -> boxes (x_min, y_min, x_max, y_max in input pixels), scores and
    class ids of the (anchor, class) pairs whose objectness x class score reaches the threshold."""
    grid, stride = anchor_points(input_size)
    # Class scores are sigmoids (at most 1), so a pair reaches the threshold only where its
    # anchor's objectness does: the products are taken for those few anchors, not all N x C.
    # The same pairs in the same order as over the whole output.
    rows = np.flatnonzero(above_threshold(raw[:, 4], score_threshold))
    scores = raw[rows, 4:5] * raw[rows, 5:]
    anchors, classes = np.nonzero(above_threshold(scores, score_threshold))
    kept = scores[anchors, classes]
    anchors = rows[anchors]
    best = np.argsort(-kept, kind="stable")[:MAX_CANDIDATES]
    anchors, classes, kept = anchors[best], classes[best], kept[best]
    centers = (raw[anchors, :2] + grid[anchors]) * stride[anchors]
    sizes = np.exp(np.minimum(raw[anchors, 2:4], 20.0)) * stride[anchors]
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    boxes = np.clip(boxes, 0, input_size).astype(np.float32)
    return boxes, kept.astype(np.float32), classes.astype(np.int64)


def expected_anchors(input_size: int) -> int:
    return sum((input_size // stride) ** 2 for stride in STRIDES)


def _session(model_file: Path, intra_op_threads: int) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # no busy-waiting threads: they cost more than they save on a shared, busy CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types are not importable by name
        raise DetectorUnavailable(f"{model_file}: not a loadable ONNX model: {exc}") from exc


class YoloxDetector:
    """A YOLOX-layout ONNX model on ONNX Runtime; `labels` name its C classes in order."""

    def __init__(
        self,
        model_file: Path,
        options: RunOptions,
        iou_threshold: float = YOLOX_IOU_THRESHOLD,
    ) -> None:
        self.name, self.version = options.name, options.version
        self.labels = options.labels
        self.score_threshold = options.score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = options.max_detections
        self._session = _session(model_file, options.intra_op_threads)
        self._input = self._session.get_inputs()[0].name
        self.input_size = self._check_shapes(model_file)

    def _check_shapes(self, model_file: Path) -> int:
        """The square input size; raises DetectorUnavailable naming the file when the input or
        output shape is not YOLOX's or the output's class count differs from the labels'."""
        shape = self._session.get_inputs()[0].shape
        if (
            len(shape) != 4
            or shape[1] != 3
            or not isinstance(shape[2], int)
            or shape[2] != shape[3]
        ):
            raise DetectorUnavailable(f"{model_file}: input shape {shape} is not (1, 3, S, S)")
        size = int(shape[2])
        blank = np.zeros((1, 3, size, size), dtype=np.float32)
        out = self._session.run(None, {self._input: blank})[0]
        want = (1, expected_anchors(size), 5 + len(self.labels))
        if tuple(out.shape) != want:
            raise DetectorUnavailable(
                f"{model_file}: output shape {tuple(out.shape)} is not {want} (YOLOX layout, "
                f"{len(self.labels)} classes as its labels say)"
            )
        return size

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        return resized_size(make_geometry(width, height, self.input_size, "topleft"))

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        start = time.perf_counter()
        batch, geometry = topleft_bgr_input(image, self.input_size, PAD_VALUE, source)
        preprocess_ms, start = _ms(start), time.perf_counter()
        raw = self._session.run(None, {self._input: batch})[0][0]
        inference_ms, start = _ms(start), time.perf_counter()
        threshold = self.score_threshold if min_score is None else min_score
        detections = self._postprocess(raw, geometry, threshold)
        return DetectionOutput(detections, preprocess_ms, inference_ms, _ms(start))

    def _postprocess(self, raw: FloatArray, geometry: Any, threshold: float) -> list[Detection]:
        boxes, scores, class_ids = decode_yolox(raw, self.input_size, threshold)
        keep = batched_nms(boxes, scores, class_ids, self.iou_threshold)[: self.max_detections]
        return to_detections(boxes[keep], scores[keep], class_ids[keep], geometry, self.labels)

    def warm_up(self) -> None:
        blank = np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32)
        for _ in range(2):
            self._session.run(None, {self._input: blank})


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
