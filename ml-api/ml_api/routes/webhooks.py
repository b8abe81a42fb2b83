"""Webhooks: a task's or a batch's delivery attempts, a manual redelivery, and the key's
signing secret."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ml_api.deps import ApiKeyDep, BatchesDep, QueueDep, RedisDep, ResultsDep, SettingsDep
from ml_api.errors import documented
from ml_common.errors import NoWebhook
from ml_common.schemas import (
    BatchDeliveries,
    Deliveries,
    DeliveryAttempt,
    DeliveryLog,
    WebhookSecret,
)
from ml_common.webhooks import read_deliveries, signing_secret

router = APIRouter(tags=["webhooks"])
ERRORS = documented(401, 404, 429, 503)


async def _deliveries(record_id: str, redis: RedisDep, what: str) -> DeliveryLog:
    """The webhook kept under `record_id`: a task's, or a batch's `batch.completed`."""
    delivery, attempts = await read_deliveries(redis, record_id)
    if delivery is None:
        raise NoWebhook(f"{what} {record_id} has no webhook (no callback_url, or not ended yet)")
    return DeliveryLog(
        webhook_id=delivery.webhook_id,
        url=delivery.url,
        event=delivery.event,
        state=delivery.state,
        attempts=[DeliveryAttempt.model_validate(a, from_attributes=True) for a in attempts],
    )


@router.get("/detections/{task_id}/deliveries", responses=ERRORS)
async def get_deliveries(
    task_id: uuid.UUID, key: ApiKeyDep, results: ResultsDep, redis: RedisDep
) -> Deliveries:
    """The task's webhook and every attempt at it (time, receiver's status, error)."""
    await results.lookup(str(task_id), key.key_id)  # 404 for an unknown or another's task
    log = await _deliveries(str(task_id), redis, "task")
    return Deliveries(task_id=str(task_id), **dict(log))


@router.post("/detections/{task_id}/deliveries", status_code=202, responses=ERRORS)
async def redeliver(
    task_id: uuid.UUID, key: ApiKeyDep, results: ResultsDep, redis: RedisDep, queue: QueueDep
) -> Deliveries:
    """Send the task's webhook once more, with the same `webhook-id`."""
    found = await get_deliveries(task_id, key, results, redis)
    await run_in_threadpool(queue.redeliver, str(task_id))
    return found


@router.get("/batches/{batch_id}/deliveries", responses=ERRORS)
async def get_batch_deliveries(
    batch_id: uuid.UUID, key: ApiKeyDep, batches: BatchesDep, redis: RedisDep
) -> BatchDeliveries:
    """The batch's `batch.completed` webhook and every attempt at it."""
    await batches.owned(str(batch_id), key.key_id)  # 404 for an unknown or another's
    log = await _deliveries(str(batch_id), redis, "batch")
    return BatchDeliveries(batch_id=str(batch_id), **dict(log))


@router.post("/batches/{batch_id}/deliveries", status_code=202, responses=ERRORS)
async def redeliver_batch(
    batch_id: uuid.UUID, key: ApiKeyDep, batches: BatchesDep, redis: RedisDep, queue: QueueDep
) -> BatchDeliveries:
    """Send the batch's `batch.completed` webhook once more, with the same `webhook-id`."""
    found = await get_batch_deliveries(batch_id, key, batches, redis)
    await run_in_threadpool(queue.redeliver, str(batch_id))  # kept under the batch's id
    return found


@router.get("/webhooks/secret", responses=ERRORS)
async def get_webhook_secret(key: ApiKeyDep, settings: SettingsDep) -> WebhookSecret:
    """This key's secret for verifying deliveries (Standard Webhooks, HMAC-SHA256)."""
    return WebhookSecret(secret=signing_secret(settings.secret_key.get_secret_value(), key.key_id))
