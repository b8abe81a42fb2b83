"""The Celery tasks: detect (read the upload, run the pipeline) and the daily retention clean-up."""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime
from typing import Any

import redis
from celery import Task, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from ml_celery import metrics
from ml_celery.celery_app import app
from ml_celery.pipeline import analyse
from ml_celery.webhooks import announce_end, start_batch_item
from ml_common.contract import CANCELLED_STATE, CLEANUP_TASK, DETECT_TASK
from ml_common.errors import StorageUnavailable
from ml_common.models import default_model
from ml_common.retention import cleanup
from ml_common.settings import get_settings
from ml_common.storage import Storage, open_storage
from ml_common.taskstore import RecordStore
from ml_common.tracing import message_trace_headers, record_stages

logger = logging.getLogger(__name__)


@functools.cache
def _records() -> RecordStore:
    return RecordStore.connect(get_settings())


@functools.cache
def _storage() -> Storage:
    return open_storage(get_settings())  # one S3 client per process: it keeps its connections


def _queue_wait_ms(created_at: str) -> float | None:
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    return round((time.time() - created.timestamp()) * 1000, 3)


@app.task(
    name=DETECT_TASK,
    bind=True,
    # never the image's own errors, nor a misconfigured store (StorageMisconfigured)
    autoretry_for=(redis.ConnectionError, redis.TimeoutError, StorageUnavailable),
    dont_autoretry_for=(SoftTimeLimitExceeded,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,  # about a minute: long enough for a store or Redis to restart
)
def detect(
    self: Task[Any, Any],
    upload_key: str,
    created_at: str,
    model: str | None = None,
    callback_url: str | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """Detect objects in the stored upload `upload_key` with `model` (this worker's default
    when None: tasks queued before models had names); returns a DetectionResult as JSON.
    `callback_url` and `batch_id` are read when the task has ended, by `_announce_end` below:
    the outcome is POSTed to `callback_url`, and a batch item's end counts toward its batch's
    `batch.completed` event."""
    settings = get_settings()
    task_id = str(self.request.id)
    queue_wait = _queue_wait_ms(created_at)

    if _records().is_cancelled(task_id):  # a durable mark: it outlives restarts and prefetch
        logger.info("task %s: cancelled before inference", task_id, extra={"task_id": task_id})
        self.update_state(state=CANCELLED_STATE, meta={"reason": "cancelled before inference"})
        metrics.observe_outcome(model or default_model(settings), "cancelled")
        raise Ignore()
    # the API draws the annotated image
    result = analyse(_storage().read(upload_key), settings, model=model)
    result.timings.queue_wait_ms = queue_wait
    metrics.observe_result(result, model or default_model(settings))
    timings = result.timings
    record_stages({"decode": timings.decode_ms, "inference": timings.inference_ms,
                   "postprocess": timings.postprocess_ms})  # fmt: skip
    logger.info(
        "task %s: detected %d objects", task_id, len(result.detections),
        extra={"task_id": task_id},
    )  # fmt: skip
    return result.model_dump(mode="json")


metrics.connect_failure_signals(DETECT_TASK)


@signals.task_prerun.connect(sender=detect)
def _record_start(task_id: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    # task_prerun runs before Celery stores and publishes STARTED, so a client woken by that
    # state change already finds started_at.
    _records().mark_started(task_id)
    if batch_id := (kwargs or {}).get("batch_id"):
        start_batch_item(batch_id, task_id)  # the batch's counts (ml_common.batchhooks)


@signals.task_postrun.connect(sender=detect)
def _announce_end(
    sender: Any = None, task_id: str = "", kwargs: dict[str, Any] | None = None,
    retval: Any = None, state: str = "", **_: Any,
) -> None:  # fmt: skip
    # task_postrun runs after Celery stored the result, and after every end, a cancel (Ignore)
    # included, where Task.after_return is skipped: the webhook and the batch count go here
    args = kwargs or {}
    callback_url, batch_id = args.get("callback_url"), args.get("batch_id")
    if callback_url or batch_id:
        headers = message_trace_headers(sender)  # each attempt's span joins the upload's trace
        announce_end(task_id, callback_url, batch_id, state, retval, headers)


@app.task(name=CLEANUP_TASK, ignore_result=True)
def cleanup_storage() -> None:
    """Daily retention clean-up, sent by `celery beat` (see docker-compose.yaml's ml-beat)."""
    cleanup(get_settings())
