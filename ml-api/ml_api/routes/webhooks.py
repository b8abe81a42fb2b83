"""Webhooks: a task's delivery attempts, a manual redelivery, and the key's signing secret."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ml_api.deps import ApiKeyDep, QueueDep, RedisDep, ResultsDep, SettingsDep
from ml_common.errors import NoWebhook
from ml_common.schemas import Deliveries, DeliveryAttempt, ErrorOut, WebhookSecret
from ml_common.webhooks import read_deliveries, signing_secret

router = APIRouter(tags=["webhooks"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (401, 404, 429, 503)
}


async def _deliveries(task_id: str, redis: RedisDep) -> Deliveries:
    delivery, attempts = await read_deliveries(redis, task_id)
    if delivery is None:
        raise NoWebhook(f"task {task_id} has no webhook (no callback_url, or not ended yet)")
    return Deliveries(
        task_id=task_id,
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
    return await _deliveries(str(task_id), redis)


@router.post("/detections/{task_id}/deliveries", status_code=202, responses=ERRORS)
async def redeliver(
    task_id: uuid.UUID, key: ApiKeyDep, results: ResultsDep, redis: RedisDep, queue: QueueDep
) -> Deliveries:
    """Send the task's webhook once more, with the same `webhook-id`."""
    await results.lookup(str(task_id), key.key_id)
    found = await _deliveries(str(task_id), redis)
    await run_in_threadpool(queue.redeliver, str(task_id))
    return found


@router.get("/webhooks/secret", responses=ERRORS)
async def get_webhook_secret(key: ApiKeyDep, settings: SettingsDep) -> WebhookSecret:
    """This key's secret for verifying deliveries (Standard Webhooks, HMAC-SHA256)."""
    return WebhookSecret(secret=signing_secret(settings.secret_key.get_secret_value(), key.key_id))
