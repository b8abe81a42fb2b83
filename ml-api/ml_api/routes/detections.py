"""/api/v1/detections: submit an image, read its status, result, annotated image and events."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ml_api.deps import (
    ApiKeyDep,
    LimiterDep,
    QueueDep,
    ResultsDep,
    SettingsDep,
    StorageDep,
    TasksDep,
)
from ml_api.results import links_for
from ml_common.annotate import annotated_image
from ml_common.contract import DetectPayload
from ml_common.errors import BackendUnavailable, MLProdError, PayloadTooLarge, TaskNotFinished
from ml_common.images import ImageLimits, inspect_image
from ml_common.models import resolve_model
from ml_common.records import TaskRecord
from ml_common.schemas import ErrorOut, TaskCreated, TaskState, TaskStatus

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/detections", tags=["detections"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (401, 404, 422, 429, 503)
}
UPLOAD_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (401, 413, 415, 422, 429, 503)
}


@router.post("", status_code=202, responses=UPLOAD_ERRORS)
async def create_detection(
    file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, BMP or GIF image")],
    response: Response,
    key: ApiKeyDep,
    settings: SettingsDep,
    storage: StorageDep,
    queue: QueueDep,
    tasks: TasksDep,
    limiter: LimiterDep,
    model: Annotated[
        str | None, Form(description="a served model (GET /api/v1/models); default if absent")
    ] = None,
) -> TaskCreated:
    """Accept an image and queue it for detection; poll or stream the returned links."""
    await limiter.hit(key.key_id, "upload")
    chosen = resolve_model(settings, model)
    timer = StageTimer()
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload exceeds the limit of {settings.max_upload_bytes} bytes")
    timer.lap("receive")
    info = await run_in_threadpool(inspect_image, data, ImageLimits.from_settings(settings))
    timer.lap("validate")

    task_id = str(uuid.uuid4())
    record = TaskRecord.new(task_id, key.key_id, storage.upload_key(task_id, info.ext))
    await run_in_threadpool(storage.write, record.upload_key, data)
    try:
        await tasks.create(record)
        timer.lap("store")
        payload = DetectPayload(
            upload_key=record.upload_key, created_at=record.created_at.isoformat(), model=chosen
        )
        await run_in_threadpool(queue.submit, task_id, payload)
    except MLProdError:
        # nothing half-done stays behind: the client gets no task id, so no file or record
        await run_in_threadpool(storage.delete, record.upload_key)
        await tasks.discard(task_id)
        raise
    await tasks.mark_queued(task_id)
    timer.lap("enqueue")
    logger.info(
        "queued %s (%s, %d bytes)", task_id, info.format, len(data), extra={"task_id": task_id}
    )
    response.headers["Server-Timing"] = timer.header()
    links = links_for(task_id)
    response.headers["Location"] = links.self
    return TaskCreated(task_id=task_id, status=TaskState.queued, links=links)


class StageTimer:
    """Milliseconds per stage of a request, for its `Server-Timing` header."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = (now - self._last) * 1000
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in self.stages.items())


@router.get("/{task_id}", responses=ERRORS)
async def get_detection(
    task_id: uuid.UUID,
    key: ApiKeyDep,
    results: ResultsDep,
    wait: Annotated[
        float, Query(ge=0, le=60, description="seconds to wait for the task to finish")
    ] = 0,
) -> TaskStatus:
    """The task's state, timestamps, and its result or error once finished."""
    if not wait:
        return await results.status(str(task_id), key.key_id)
    statuses = [s async for s in results.updates(str(task_id), key.key_id, timeout_s=wait)]
    return statuses[-1]


@router.get(
    "/{task_id}/image",
    responses={**ERRORS, 409: {"model": ErrorOut}, 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
)
async def get_detection_image(
    task_id: uuid.UUID,
    key: ApiKeyDep,
    results: ResultsDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """The image with the detected boxes and labels drawn on it (JPEG), drawn on first request."""
    record, status = await results.lookup(str(task_id), key.key_id)
    if status.status is not TaskState.succeeded or status.result is None:
        raise TaskNotFinished(f"task {task_id} is {status.status.value}, not succeeded")
    data = await run_in_threadpool(
        annotated_image,
        storage,
        record.upload_key,
        status.result.detections,
        settings.max_image_pixels,
    )
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get(
    "/{task_id}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
async def stream_detection_events(
    task_id: uuid.UUID,
    key: ApiKeyDep,
    results: ResultsDep,
    timeout: Annotated[float, Query(gt=0, le=600)] = 300,
) -> StreamingResponse:
    """Server-sent events: one `status` event per state change, ending with the final one."""
    updates = results.updates(str(task_id), key.key_id, timeout_s=timeout)
    first = await anext(updates)  # 404/503 surface as errors before the stream starts

    async def events() -> AsyncIterator[str]:
        yield f"event: status\ndata: {first.model_dump_json()}\n\n"
        try:
            async with aclosing(updates):  # frees the key's place the moment the stream ends
                async for status in updates:
                    yield f"event: status\ndata: {status.model_dump_json()}\n\n"
        except BackendUnavailable as exc:
            error = ErrorOut(code=exc.code, detail=exc.detail)
            yield f"event: error\ndata: {error.model_dump_json()}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
