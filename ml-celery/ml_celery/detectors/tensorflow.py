"""TensorFlow-backed detectors; TensorFlow is imported only when one is built."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ml_celery.detectors.base import DetectionOutput
from ml_celery.detectors.manifest import RunOptions
from ml_celery.detectors.nanodet import NANODET_INPUT, NanoDet, elapsed_ms
from ml_celery.detectors.postprocess import above_threshold, to_detections
from ml_celery.detectors.preprocess import Geometry, Source
from ml_common.coco import COCO_80_LABELS, COCO_91_TO_80
from ml_common.schemas import Detection

logger = logging.getLogger(__name__)


def import_tensorflow(intra_op_threads: int = 0) -> Any:
    """Import TensorFlow, limiting its intra-op thread pool when `intra_op_threads` > 0."""
    import tensorflow as tf

    if intra_op_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        except RuntimeError:  # the runtime is already up in this process; the old value stays
            logger.warning("TensorFlow already initialised; intra_op_threads ignored")
    return tf


class NanoDetDetector(NanoDet):
    """NanoDet-g (416 x 416, COCO-80) from the SavedModel that prepare_model writes."""

    def _load(self, model_dir: Path, intra_op_threads: int) -> None:
        tf = import_tensorflow(intra_op_threads)
        self._tf = tf
        self._model = tf.saved_model.load(str(model_dir))  # keeps the signature's graph alive
        self._infer: Callable[..., dict[str, Any]] = self._model.signatures["serving_default"]
        input_spec = self._infer.structured_input_signature[1][NANODET_INPUT]
        self.input_size = int(input_spec.shape[-1])

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        outputs = self._infer(**{NANODET_INPUT: self._tf.constant(batch)})
        return {name: tensor.numpy()[0] for name, tensor in outputs.items()}


class TFODAPIDetector:
    """A TF2 Object Detection API SavedModel trained on COCO (uint8 NHWC input).

    Its `detection_classes` are 1-based ids of the 91-id COCO space; the ten ids COCO never used
    (and anything else outside COCO-80) are dropped, the rest mapped to COCO_80_LABELS by
    `COCO_91_TO_80`. Boxes come normalised as (ymin, xmin, ymax, xmax); NMS is the model's own.
    """

    def __init__(self, model_dir: Path, options: RunOptions) -> None:
        tf = import_tensorflow(options.intra_op_threads)
        self._tf = tf
        self._model = tf.saved_model.load(str(model_dir))
        self._infer: Callable[..., dict[str, Any]] = self._model.signatures["serving_default"]
        (self._input_name,) = self._infer.structured_input_signature[1]
        self.name, self.version = options.name, options.version
        self.score_threshold = options.score_threshold
        self.max_detections = options.max_detections

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height  # the model resizes inside its graph: it takes the whole photo

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        start = time.perf_counter()
        batch = np.asarray(image.convert("RGB"), dtype=np.uint8)[np.newaxis]
        preprocess_ms, start = elapsed_ms(start), time.perf_counter()
        outputs = self._infer(**{self._input_name: self._tf.constant(batch)})
        arrays = {name: tensor.numpy()[0] for name, tensor in outputs.items()}
        inference_ms, start = elapsed_ms(start), time.perf_counter()
        width, height = (source.width, source.height) if source else image.size
        threshold = self.score_threshold if min_score is None else min_score
        detections = self._to_detections(arrays, width, height, threshold)
        return DetectionOutput(detections, preprocess_ms, inference_ms, elapsed_ms(start))

    def _to_detections(
        self, arrays: dict[str, npt.NDArray[Any]], width: int, height: int, threshold: float
    ) -> list[Detection]:
        count = int(arrays["num_detections"]) if "num_detections" in arrays else None
        scores = arrays["detection_scores"][:count].astype(np.float32)
        coco_ids = np.rint(arrays["detection_classes"][:count]).astype(np.int64)
        class_ids = np.array([COCO_91_TO_80.get(int(i), -1) for i in coco_ids], dtype=np.int64)
        keep = np.flatnonzero(above_threshold(scores, threshold) & (class_ids >= 0))
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.max_detections]
        y_min, x_min, y_max, x_max = arrays["detection_boxes"][:count][keep].astype(np.float32).T
        boxes = np.stack([x_min * width, y_min * height, x_max * width, y_max * height], axis=1)
        identity = Geometry(width, height, 1.0, 1.0, 0.0, 0.0)
        return to_detections(boxes, scores[keep], class_ids[keep], identity, COCO_80_LABELS)

    def warm_up(self) -> None:
        dummy = self._tf.zeros((1, 64, 64, 3), dtype=self._tf.uint8)
        self._infer(**{self._input_name: dummy})
