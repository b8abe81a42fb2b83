"""The models the bench measures: the default model `make run` serves first, NanoDet-g beside it.

The bench's processes (and the stacks and BentoML servers they start) read ML_MODELS; unset, it
is the deployment's default (YOLOX-Nano on ONNX Runtime), so `make bench` measures what serves.
"""

from __future__ import annotations

import os

DEFAULT = "yolox-nano"
SECOND = "nanodet-g-416"  # LiteRT


def use_served_model() -> str:
    """Sets ML_MODELS to the default model unless the caller chose; the model measured."""
    os.environ.setdefault("ML_MODELS", DEFAULT)
    return os.environ["ML_MODELS"].split(",")[0].strip()
