"""Turns a task record and Celery's result meta into the TaskStatus a client reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ml_api.subscriber import WaitSlots
from ml_common.contract import CANCELLED_STATE
from ml_common.errors import TaskNotFound
from ml_common.records import TaskRecord, meta_key
from ml_common.schemas import (
    FINAL_STATES,
    DetectionResult,
    Links,
    TaskError,
    TaskState,
    TaskStatus,
)
from ml_common.taskstore import Channels, Listener, Lookup, TaskStore

MAX_PREFERRED_WAIT_S = 60.0

CELERY_STATES = {
    "PENDING": TaskState.queued,
    "RECEIVED": TaskState.queued,
    "RETRY": TaskState.queued,
    "STARTED": TaskState.started,
    "SUCCESS": TaskState.succeeded,
    "FAILURE": TaskState.failed,
    "REVOKED": TaskState.cancelled,
    CANCELLED_STATE: TaskState.cancelled,
}


def preferred_wait(prefer: str) -> float | None:
    """The seconds of a `Prefer: wait=N` (RFC 7240), at most 60; None when absent, zero or
    not understood (a preference the server does not understand is ignored)."""
    for preference in prefer.split(","):
        name, _, value = preference.partition(";")[0].strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None
        return min(seconds, MAX_PREFERRED_WAIT_S) if 0 < seconds < float("inf") else None
    return None


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


def state_of(record: TaskRecord, meta: Mapping[str, Any] | None) -> TaskState:
    """The task's state alone: cheap, for counting many (a batch's)."""
    if record.refused:
        return TaskState.failed
    state = CELERY_STATES.get(str(meta.get("status")), TaskState.queued) if meta else None
    if record.cancelled_at is not None and (
        state in (None, TaskState.queued)
        or (state is TaskState.started and _cancelled_first(record))
    ):
        return TaskState.cancelled  # it never runs its model; one already running finishes
    return state or TaskState.queued


def _cancelled_first(record: TaskRecord) -> bool:
    """Whether the cancel mark came before the worker took the task: it then finds the mark
    before inference, so the task reads as cancelled from the moment of the cancel on (never
    cancelled, then started, then cancelled again)."""
    assert record.cancelled_at is not None
    return record.started_at is None or record.cancelled_at <= record.started_at


def build_status(record: TaskRecord, meta: Mapping[str, Any] | None) -> TaskStatus:
    state = state_of(record, meta)
    finished = (meta.get("date_done") if meta else None) or record.cancelled_at
    result = error = None
    if meta is not None and str(meta.get("status")) == "SUCCESS":
        result = DetectionResult.model_validate(meta["result"])
    elif record.refused:
        code, _, detail = record.refused.partition(": ")
        error, finished = TaskError(type=code, message=detail), record.created_at
    elif state is TaskState.failed and meta is not None:
        error = _error_of(meta)
    return TaskStatus(
        task_id=record.task_id,
        status=state,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=finished if state in FINAL_STATES else None,
        result=result,
        error=error,
        links=links_for(record.task_id),
    )


def _owned(task_id: str, owner: str, found: Lookup) -> tuple[TaskRecord, TaskStatus]:
    if found.record is None or found.record.owner != owner:
        raise TaskNotFound(f"no task {task_id}")
    return found.record, build_status(found.record, found.meta)


class ResultReader:
    """Task status for one owner; another owner's task id reads as unknown.

    Waiting for updates takes one of the owner's places in `slots` for as long as it lasts.
    """

    def __init__(self, store: TaskStore, channels: Channels, slots: WaitSlots) -> None:
        self.store = store
        self.channels = channels
        self.slots = slots

    async def lookup(self, task_id: str, owner: str) -> tuple[TaskRecord, TaskStatus]:
        """The task's record and status, read in one round trip."""
        return _owned(task_id, owner, await self.store.lookup(task_id))

    async def status(self, task_id: str, owner: str) -> TaskStatus:
        return (await self.lookup(task_id, owner))[1]

    async def updates(
        self, task_id: str, owner: str, timeout_s: float
    ) -> AsyncGenerator[TaskStatus, None]:
        """Yield the status now and again at each state change, until final or `timeout_s`."""
        last: TaskState | None = None
        with self.slots.hold(owner):
            lookups = self.store.updates(task_id, timeout_s, self.channels)
            async with aclosing(lookups):
                async for found in lookups:
                    status = _owned(task_id, owner, found)[1]
                    if status.status != last:
                        last = status.status
                        yield status
                    if status.status in FINAL_STATES:
                        return


def _not_final(message: str | None) -> bool:
    """Whether a message Celery published says the task is not final yet (else: read it)."""
    if message is None:
        return False
    try:
        state = json.loads(message).get("status")
    except (ValueError, AttributeError):
        return False
    return CELERY_STATES.get(str(state)) in (TaskState.queued, TaskState.started)


@dataclass
class Watch:
    """A task listened to from before it was queued: no message about it can be missed."""

    reader: ResultReader
    task_id: str
    owner: str
    listener: Listener

    async def final(self, timeout_s: float) -> TaskStatus | None:
        """The task's status once it is final, or None when `timeout_s` runs out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            if not await self.listener.wait(remaining):
                return None
            if _not_final(self.listener.message):
                continue  # STARTED: reading the store for it cost a round trip per task
            status = await self.reader.status(self.task_id, self.owner)
            if status.status in FINAL_STATES:
                return status
        return None


@asynccontextmanager
async def watch(reader: ResultReader, task_id: str, owner: str) -> AsyncIterator[Watch | None]:
    """Listen on a task not yet submitted, in one of the owner's wait places; None when the
    owner holds all of them (the caller then answers without waiting)."""
    if not reader.slots.free(owner):
        yield None
        return
    with reader.slots.hold(owner):
        async with reader.channels.listen(meta_key(task_id)) as listener:
            yield Watch(reader, task_id, owner, listener)
