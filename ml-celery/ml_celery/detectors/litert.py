"""NanoDet-g through LiteRT (TensorFlow Lite, XNNPACK) from the `model.tflite` prepare_model writes.

Same network and weights as the SavedModel, converted by `tf.lite.TFLiteConverter`; on this
model it is faster on CPU and needs a fraction of the memory (see docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ml_celery.detectors.nanodet import NANODET_INPUT, NanoDet
from ml_common.errors import DetectorUnavailable

TFLITE_FILE = "model.tflite"


def load_interpreter(model_path: Path, num_threads: int) -> Any:
    """A LiteRT interpreter for `model_path` with XNNPACK's `num_threads` (>= 1)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
    except ImportError as exc:  # the worker extra installs it
        raise DetectorUnavailable("ML_RUNTIME=tflite needs the ai-edge-litert package") from exc
    return Interpreter(model_path=str(model_path), num_threads=num_threads)


class NanoDetLiteDetector(NanoDet):
    """NanoDet-g on LiteRT; detections match NanoDetDetector's (same graph, float32)."""

    def _load(self, model_dir: Path, intra_op_threads: int) -> None:
        threads = intra_op_threads or os.cpu_count() or 1
        self._interpreter = load_interpreter(model_dir / TFLITE_FILE, threads)
        self._runner: Callable[..., dict[str, npt.NDArray[np.float32]]] = (
            self._interpreter.get_signature_runner("serving_default")
        )
        shape = self._interpreter.get_input_details()[0]["shape"]
        self.input_size = int(shape[-1])

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        outputs = self._runner(**{NANODET_INPUT: batch})
        return {name: array[0] for name, array in outputs.items()}
