"""The task contract of the API (producer) and the worker: task names and the detect payload."""

from __future__ import annotations

from typing import TypedDict

DETECT_TASK = "mlprod.detect"
CLEANUP_TASK = "mlprod.cleanup"
WEBHOOK_TASK = "mlprod.webhook"  # one attempt at a task's webhook delivery (ml_celery.webhooks)
# the state the worker stores for a task it skipped because it was cancelled while queued
CANCELLED_STATE = "CANCELLED"


class _ModelChoice(TypedDict, total=False):
    model: str  # the served model to run (ml_common.models); absent: the worker's default
    callback_url: str  # where the task's end is POSTed (ml_common.webhooks); absent: nowhere
    batch_id: str  # a batch item's batch: its end counts toward batch.completed (batchhooks)
    # [width, height] of the photo the client shrank before sending (checked by the API):
    # the worker gives boxes in its pixels; absent: the upload is the photo itself
    original_size: list[int]
    # the lowest score to keep, which the upload asked for (checked by the API against
    # ML_MIN_SCORE_FLOOR); absent: the worker's ML_SCORE_THRESHOLD
    min_score: float


class DetectPayload(_ModelChoice):
    """Keyword arguments of the detect task: storage keys only, never image bytes."""

    upload_key: str
    created_at: str
