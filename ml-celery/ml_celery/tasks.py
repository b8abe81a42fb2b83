"""The detect task: read the upload, run the detector, store the annotated image and result."""

from __future__ import annotations

import functools
import io
import logging
import time
from datetime import datetime
from typing import Any

import redis
from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image

from ml_celery.annotate import draw_detections
from ml_celery.celery_app import app
from ml_celery.detectors.registry import load_detector
from ml_common import records
from ml_common.images import decode_rgb
from ml_common.retention import cleanup
from ml_common.schemas import DetectionResult, StageTimings
from ml_common.settings import Settings, get_settings
from ml_common.storage import Storage
from ml_common.tasks import CLEANUP_TASK, DETECT_TASK

logger = logging.getLogger(__name__)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(str(get_settings().result_backend), socket_timeout=5)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _queue_wait_ms(created_at: str) -> float | None:
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    return round((time.time() - created.timestamp()) * 1000, 3)


def analyse(data: bytes, settings: Settings) -> tuple[DetectionResult, bytes]:
    """Decode, detect and annotate one image: the task's work, without storage or Redis."""
    t0 = time.perf_counter()
    image = decode_rgb(data, settings.max_image_pixels)
    decode_ms = _ms_since(t0)

    detector = load_detector(settings)
    output = detector.detect(image)

    t0 = time.perf_counter()
    buf = io.BytesIO()
    draw_detections(image, output.detections).save(buf, format="JPEG", quality=90)
    annotate_ms = _ms_since(t0)

    result = DetectionResult(
        width=image.width,
        height=image.height,
        model_name=detector.name,
        model_version=detector.version,
        inference_ms=round(output.inference_ms, 3),
        detections=output.detections,
        timings=StageTimings(
            decode_ms=decode_ms,
            inference_ms=round(output.inference_ms, 3),
            postprocess_ms=round(output.postprocess_ms + output.preprocess_ms, 3),
            annotate_ms=annotate_ms,
        ),
    )
    return result, buf.getvalue()


def warm_up(settings: Settings) -> None:
    """Run the whole task path on made-up photos, so the first real task is as fast as any:
    decoders, pre/post-processing, the annotation font and the JPEG encoder all get loaded."""
    for size in ((640, 480), (512, 512)):
        gradient = Image.linear_gradient("L").resize(size).convert("RGB")
        buf = io.BytesIO()
        gradient.save(buf, format="JPEG")
        analyse(buf.getvalue(), settings)


@app.task(
    name=DETECT_TASK,
    bind=True,
    autoretry_for=(redis.ConnectionError, redis.TimeoutError, OSError),
    dont_autoretry_for=(SoftTimeLimitExceeded,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=5,
)
def detect(self: Task[Any, Any], upload_key: str, created_at: str) -> dict[str, Any]:
    """Detect objects in the stored upload `upload_key`; returns a DetectionResult as JSON."""
    settings = get_settings()
    storage = Storage(settings.storage_dir)
    task_id = str(self.request.id)
    queue_wait = _queue_wait_ms(created_at)

    result, annotated = analyse(storage.read(upload_key), settings)
    annotated_key = storage.annotated_key(upload_key, "jpg")
    storage.write(annotated_key, annotated)
    _redis().hset(records.record_key(task_id), records.ANNOTATED_KEY, annotated_key)

    result.timings.queue_wait_ms = queue_wait
    logger.info("detected %d objects", len(result.detections), extra={"task_id": task_id})
    return result.model_dump(mode="json")


@signals.task_prerun.connect(sender=detect)
def _record_start(task_id: str, **_: Any) -> None:
    # task_prerun runs before Celery stores and publishes STARTED, so a client woken by that
    # state change already finds started_at.
    _redis().hset(records.record_key(task_id), records.STARTED_AT, records.now_iso())


@app.task(name=CLEANUP_TASK, ignore_result=True)
def cleanup_storage() -> None:
    """Daily retention clean-up, sent by `celery beat` (see docker-compose.yaml's ml-beat)."""
    cleanup(get_settings())
