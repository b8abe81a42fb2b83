"""/api/v1/detections: submit an image, read its status, result, annotated image and events."""

from __future__ import annotations

import functools
import logging
import posixpath
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ml_api.annotate import annotated_image, annotated_url
from ml_api.deps import (
    ApiKeyDep,
    IdempotencyDep,
    IdempotencyKeyHeader,
    LimiterDep,
    ResultsDep,
    SettingsDep,
    StorageDep,
    SubmitterDep,
    TasksDep,
)
from ml_api.downloads import event_stream, export_response
from ml_api.errors import documented
from ml_api.exports import MEDIA_TYPES, ExportFormat, ExportItem
from ml_api.results import links_for
from ml_api.submit import StageTimer, Upload, fingerprint
from ml_common.errors import BackendUnavailable, PayloadTooLarge, TaskNotFinished
from ml_common.models import resolve_model
from ml_common.schemas import FINAL_STATES, Cancelled, ErrorOut, TaskCreated, TaskState, TaskStatus
from ml_common.stagemetrics import observe_stage
from ml_common.webhooks import check_callback_url

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/detections", tags=["detections"])

ERRORS = documented(401, 404, 422, 429, 503)
UPLOAD_ERRORS = documented(401, 413, 415, 422, 429, 503)


class SingleFormat(str, Enum):
    """The export formats that make sense for one task (its annotated image is at /image)."""

    jsonl = "jsonl"
    csv = "csv"
    coco = "coco"


SINGLE_MEDIA_TYPES = [MEDIA_TYPES[ExportFormat(f.value)].split(";")[0] for f in SingleFormat]


@router.post("", status_code=202, responses={**UPLOAD_ERRORS, **documented(409)})
async def create_detection(
    file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, BMP or GIF image")],
    response: Response,
    key: ApiKeyDep,
    settings: SettingsDep,
    submitter: SubmitterDep,
    claims: IdempotencyDep,
    limiter: LimiterDep,
    idempotency_key: IdempotencyKeyHeader = None,
    model: Annotated[
        str | None, Form(description="a served model (GET /api/v1/models); default if absent")
    ] = None,
    callback_url: Annotated[
        str | None, Form(description="POSTed a signed event when the task ends (webhooks)")
    ] = None,
) -> TaskCreated:
    """Accept an image and queue it for detection; poll or stream the returned links.

    With an `Idempotency-Key`, a retry with the same key and file returns the same task."""
    await limiter.hit(key.key_id, "upload")
    callback = check_callback_url(callback_url) if callback_url is not None else key.callback_url
    timer = StageTimer()
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload exceeds the limit of {settings.max_upload_bytes} bytes")
    timer.lap("receive")
    chosen = resolve_model(settings, model)
    upload = Upload(
        data,
        key.key_id,
        name=file.filename or "",
        task_id=str(uuid.uuid4()),
        model=chosen,
        callback_url=callback,
    )
    digest = fingerprint(data, chosen) if idempotency_key else ""  # 1.8 ms on 3 MB: if asked
    async with claims.once(key.key_id, idempotency_key, digest, upload.task_id) as done:
        task_id = done or (await submitter.submit(upload, timer)).task_id
    response.headers["Server-Timing"] = timer.header()
    links = links_for(task_id)
    response.headers["Location"] = links.self
    return TaskCreated(task_id=task_id, status=TaskState.queued, links=links)


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
    responses={
        **ERRORS,
        **documented(409),
        200: {"content": {"image/jpeg": {}}},
        307: {"description": "with ML_STORAGE_PRESIGN_S: a short-lived URL of the bucket"},
    },
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
    drawing = (storage, record.upload_key, status.result.detections, settings.max_image_pixels)
    timed = functools.partial(observe_stage, status.result.model_name, "annotate")
    url = await run_in_threadpool(annotated_url, *drawing, settings.storage_presign_s, timed)
    if url is not None:  # ML_STORAGE_PRESIGN_S on a bucket: fetched from there, not through us
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    data = await run_in_threadpool(annotated_image, *drawing, timed)
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

    return event_stream(events())


@router.delete("/{task_id}", responses=ERRORS)
async def cancel_detection(
    task_id: uuid.UUID, key: ApiKeyDep, results: ResultsDep, tasks: TasksDep
) -> Cancelled:
    """Cancel a task: a queued one never runs its model and ends `cancelled` (the worker
    checks a durable mark first). A running one is left alone (`changed: false`): it finishes
    and keeps its result. A finished one stays as it is."""
    _, status = await results.lookup(str(task_id), key.key_id)
    if status.status in FINAL_STATES:
        return Cancelled(changed=False, detail=f"the task is {status.status.value}: unchanged")
    if status.status is TaskState.started:
        detail = "the task is running: it will finish and keep its result; unchanged"
        return Cancelled(changed=False, detail=detail)
    await tasks.cancel([str(task_id)])
    return Cancelled(changed=True, detail="the task is cancelled: it will not run")


@router.get(
    "/{task_id}/export",
    responses={**ERRORS, 200: {"content": {t: {} for t in SINGLE_MEDIA_TYPES}}},
    response_class=Response,
)
async def export_detection(
    task_id: uuid.UUID,
    key: ApiKeyDep,
    results: ResultsDep,
    storage: StorageDep,
    settings: SettingsDep,
    format: Annotated[SingleFormat, Query(description="jsonl, csv or coco")] = SingleFormat.jsonl,
) -> Response:
    """The task in JSON Lines, CSV (one row per detection) or COCO detection JSON, named after
    the uploaded file."""
    record, status = await results.lookup(str(task_id), key.key_id)
    item = ExportItem(status, record.name, record.upload_key)
    basename = posixpath.splitext(posixpath.basename(item.name))[0] or str(task_id)
    return await export_response([item], ExportFormat(format.value), basename, storage, settings)
