"""The Celery tasks: detect (read the upload, run the pipeline) and the daily retention clean-up."""

from __future__ import annotations

import functools
import logging
import os
import time
from datetime import datetime
from typing import Any

import redis
from celery import Task, signals, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from ml_celery import metrics
from ml_celery.backend import state_meta
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


class StoredResult:
    """The detect task's return value: a DetectionResult as JSON, which Celery's backend
    stores through kombu's `__json__` hook, with a short repr. Celery takes the repr of every
    return value for its log line, logged or not: a plain dict's costs a walk of its every
    detection (about 0.3 CPU-ms a task)."""

    __slots__ = ("value",)

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def __json__(self) -> dict[str, Any]:
        return self.value

    def __repr__(self) -> str:
        return f"<{len(self.value.get('detections', ()))} detections>"


def _start(task: Task[Any, Any], task_id: str) -> bool:
    """Store and publish STARTED as Celery would (`task_track_started`), with started_at on
    the record, in one round trip; whether the task was cancelled while queued."""
    meta = state_meta(
        task.backend, task_id, {"pid": os.getpid(), "hostname": task.request.hostname},
        states.STARTED, task.request,
    )  # fmt: skip
    backend: Any = task.backend
    return _records().start(task_id, meta, int(backend.expires or 0))


@app.task(
    name=DETECT_TASK,
    bind=True,
    # never the image's own errors, nor a misconfigured store (StorageMisconfigured)
    autoretry_for=(redis.ConnectionError, redis.TimeoutError, StorageUnavailable),
    dont_autoretry_for=(SoftTimeLimitExceeded,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,  # about a minute: long enough for a store or Redis to restart
    track_started=False,  # `_start` stores STARTED, in one round trip with the cancel check
)
def detect(
    self: Task[Any, Any],
    upload_key: str,
    created_at: str,
    model: str | None = None,
    callback_url: str | None = None,
    batch_id: str | None = None,
    original_size: list[int] | None = None,
    min_score: float | None = None,
) -> StoredResult:
    """Detect objects in the stored upload `upload_key` with `model` (this worker's default
    when None: tasks queued before models had names); returns a DetectionResult as JSON
    (Celery's log line "succeeded" says how many objects it found).
    `callback_url` and `batch_id` are read when the task has ended, by `_announce_end` below:
    the outcome is POSTed to `callback_url`, and a batch item's end counts toward its batch's
    `batch.completed` event. `original_size`: the photo's size when the client shrank it;
    `min_score`: the lowest score kept, when the upload asked for one (else the setting's)."""
    settings = get_settings()
    task_id = str(self.request.id)
    queue_wait = _queue_wait_ms(created_at)

    if batch_id:  # the batch's counts (ml_common.batchhooks): started, until it ends
        start_batch_item(batch_id, task_id)
    if _start(self, task_id):  # a durable mark: it outlives restarts and prefetch
        logger.info("task %s: cancelled before inference", task_id, extra={"task_id": task_id})
        self.update_state(state=CANCELLED_STATE, meta={"reason": "cancelled before inference"})
        metrics.observe_outcome(model or default_model(settings), "cancelled")
        raise Ignore()
    # the API draws the annotated image
    data = _storage().read(upload_key)
    result = analyse(data, settings, model=model, original_size=original_size, min_score=min_score)
    result.timings.queue_wait_ms = queue_wait
    metrics.observe_result(result, model or default_model(settings))
    timings = result.timings
    record_stages({"decode": timings.decode_ms, "inference": timings.inference_ms,
                   "postprocess": timings.postprocess_ms})  # fmt: skip
    return StoredResult(result.model_dump(mode="json"))


metrics.connect_failure_signals(DETECT_TASK)


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
        value = retval.value if isinstance(retval, StoredResult) else retval
        announce_end(task_id, callback_url, batch_id, state, value, headers)


@app.task(name=CLEANUP_TASK, ignore_result=True)
def cleanup_storage() -> None:
    """Daily retention clean-up, sent by `celery beat` (see docker-compose.yaml's ml-beat)."""
    cleanup(get_settings())
