"""Reads a task's state from Redis: our task record plus Celery's result meta."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ml_common import records
from ml_common.errors import BackendUnavailable, TaskNotFound
from ml_common.schemas import DetectionResult, Links, TaskError, TaskState, TaskStatus

CELERY_STATES = {
    "PENDING": TaskState.queued,
    "RECEIVED": TaskState.queued,
    "RETRY": TaskState.queued,
    "STARTED": TaskState.started,
    "SUCCESS": TaskState.succeeded,
    "FAILURE": TaskState.failed,
    "REVOKED": TaskState.failed,
}
FINAL = frozenset({TaskState.succeeded, TaskState.failed})


def links_for(task_id: str) -> Links:
    base = f"/api/v1/detections/{task_id}"
    return Links(self=base, image=f"{base}/image", events=f"{base}/events")


def _error_of(meta: Mapping[str, Any]) -> TaskError:
    raw = meta.get("result")
    if isinstance(raw, dict):
        message = raw.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return TaskError(type=str(raw.get("exc_type", "Error")), message=str(message or ""))
    return TaskError(type="Error", message=str(raw))


def build_status(
    task_id: str, record: Mapping[str, str], meta: Mapping[str, Any] | None
) -> TaskStatus:
    state = (
        CELERY_STATES.get(str(meta.get("status")), TaskState.queued) if meta else TaskState.queued
    )
    finished = meta.get("date_done") if meta else None
    result = error = None
    if state is TaskState.succeeded and meta is not None:
        result = DetectionResult.model_validate(meta["result"])
    elif state is TaskState.failed and meta is not None:
        error = _error_of(meta)
    return TaskStatus(
        task_id=task_id,
        status=state,
        created_at=datetime.fromisoformat(record[records.CREATED_AT]),
        started_at=record.get(records.STARTED_AT),
        finished_at=finished if state in FINAL else None,
        result=result,
        error=error,
        links=links_for(task_id),
    )


class ResultReader:
    """Task status for one owner; another owner's task id reads as unknown."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def lookup(self, task_id: str, owner: str) -> tuple[dict[str, str], TaskStatus]:
        """The task's record and status, read in one round trip."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(records.record_key(task_id))
                pipe.get(records.meta_key(task_id))
                raw_record, raw_meta = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("the result store is unreachable; try again shortly") from exc
        record = {str(k): str(v) for k, v in raw_record.items()}  # decode_responses=True
        if not record or record.get(records.OWNER) != owner:
            raise TaskNotFound(f"no task {task_id}")
        meta = json.loads(raw_meta) if raw_meta else None
        return record, build_status(task_id, record, meta)

    async def status(self, task_id: str, owner: str) -> TaskStatus:
        return (await self.lookup(task_id, owner))[1]

    async def updates(
        self, task_id: str, owner: str, timeout_s: float
    ) -> AsyncIterator[TaskStatus]:
        """Yield the status now and again at each state change, until final or `timeout_s`.

        Celery PUBLISHes on the result key whenever it stores a state, so this wakes the
        moment the worker writes; nothing polls.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(records.meta_key(task_id))
                last: TaskState | None = None
                while True:
                    status = await self.status(task_id, owner)
                    if status.status != last:
                        last = status.status
                        yield status
                    remaining = deadline - loop.time()
                    if status.status in FINAL or remaining <= 0:
                        return
                    await pubsub.get_message(timeout=min(remaining, 15.0))
        except RedisError as exc:
            raise BackendUnavailable("the result store is unreachable; try again shortly") from exc
