"""NanoDet-g around any runtime: preprocess, run the network, decode its heads (no TF import)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from ml_celery.detectors.base import DetectionOutput
from ml_celery.detectors.manifest import RunOptions
from ml_celery.detectors.postprocess import postprocess
from ml_celery.detectors.preprocess import (
    ResizeMode,
    Source,
    make_geometry,
    preprocess,
    resized_size,
)
from ml_common.coco import COCO_80_LABELS

NANODET_INPUT = "input_1"
NANODET_CLS_OUTPUTS = ("cls_8", "cls_16", "cls_32")
NANODET_REG_OUTPUTS = ("reg_8", "reg_16", "reg_32")


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class NanoDet:
    """The runtime-independent part of a NanoDet detector; subclasses load the network in
    `_load` (setting `input_size` from it) and run it in `infer`."""

    input_size = 416

    def __init__(
        self,
        model_dir: Path,
        options: RunOptions,
        *,
        # letterbox keeps the aspect ratio as NanoDet was trained: COCO AP 0.248 against 0.243
        # stretched (coco-val2017-158), and a 4:3 12 MP photo decodes at 1/8 instead of 1/4
        resize_mode: ResizeMode = "letterbox",
    ) -> None:
        self.name, self.version = options.name, options.version
        self.score_threshold = options.score_threshold
        self.iou_threshold = options.iou_threshold
        self.max_detections = options.max_detections
        self.resize_mode: ResizeMode = resize_mode
        self._load(model_dir, options.intra_op_threads)

    def _load(self, model_dir: Path, intra_op_threads: int) -> None:
        """Load the network from `model_dir`; 0 threads lets the runtime choose."""
        raise NotImplementedError

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Raw head outputs for a (1, 3, size, size) input, batch axis dropped."""
        raise NotImplementedError

    def needed_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size a width x height photo can be decoded at without losing input
        pixels: the size it is resized to inside the network input."""
        return resized_size(make_geometry(width, height, self.input_size, self.resize_mode))

    def detect(
        self, image: Image.Image, source: Source | None = None, min_score: float | None = None
    ) -> DetectionOutput:
        start = time.perf_counter()
        batch, geometry = preprocess(image, self.input_size, self.resize_mode, source)
        preprocess_ms, start = elapsed_ms(start), time.perf_counter()
        outputs = self.infer(batch)
        inference_ms, start = elapsed_ms(start), time.perf_counter()
        detections = postprocess(
            [outputs[name] for name in NANODET_CLS_OUTPUTS],
            [outputs[name] for name in NANODET_REG_OUTPUTS],
            geometry,
            COCO_80_LABELS,
            input_size=self.input_size,
            score_threshold=self.score_threshold if min_score is None else min_score,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
        )
        return DetectionOutput(detections, preprocess_ms, inference_ms, elapsed_ms(start))

    def warm_up(self) -> None:
        """Two throw-away inferences: the first allocates, the second settles caches."""
        for _ in range(2):
            self.infer(np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32))
