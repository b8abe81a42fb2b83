"""/api/v1/detections: submit an image, read its status, result, annotated image and events."""

from __future__ import annotations

import functools
import logging
import posixpath
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ml_api.annotate import annotated_image, annotated_url
from ml_api.deps import (
    ApiKeyDep,
    IdempotencyKeyHeader,
    ResultsDep,
    SettingsDep,
    StorageDep,
    TasksDep,
    Uploading,
    UploadingDep,
)
from ml_api.downloads import event_stream, export_response
from ml_api.errors import documented
from ml_api.exports import MEDIA_TYPES, ExportFormat, ExportItem
from ml_api.originals import ORIGINAL_SIZE_QUERY, parse_original_size
from ml_api.results import ResultReader, links_for, preferred_wait, watch
from ml_api.scores import MIN_SCORE_QUERY, check_min_score
from ml_api.submit import StageTimer, Upload, upload_fingerprint
from ml_api.uploads import SINGLE_UPLOAD_BODY, Received, receive_upload
from ml_common.apikeys import ApiKey
from ml_common.errors import BackendUnavailable, TaskNotFinished, TooManyWaits
from ml_common.models import resolve_model
from ml_common.schemas import FINAL_STATES, Cancelled, ErrorOut, TaskCreated, TaskState, TaskStatus
from ml_common.settings import Settings
from ml_common.stagemetrics import observe_stage
from ml_common.webhooks import check_callback_url

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/detections", tags=["detections"])

ERRORS = documented(401, 404, 422, 429, 503)
UPLOAD_ERRORS = documented(400, 401, 413, 415, 422, 429, 503)  # 400: a malformed form


class SingleFormat(str, Enum):
    """The export formats that make sense for one task (its annotated image is at /image)."""

    jsonl = "jsonl"
    csv = "csv"
    coco = "coco"
    labelstudio = "labelstudio"
    yolo = "yolo"
    voc = "voc"


SINGLE_MEDIA_TYPES = [MEDIA_TYPES[ExportFormat(f.value)].split(";")[0] for f in SingleFormat]


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": TaskCreated, "description": "queued: follow the links for its result"},
    200: {
        "model": TaskStatus,
        "description": "with `Prefer: wait=N`: the task ended within N seconds (the body a "
        "GET of the task gives); `Preference-Applied: wait=N` says the wait was honoured",
    },
}
PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`wait=N` (RFC 7240, N at most 60): answer 200 with the finished task if "
        "it ends within N seconds, else 202 as without it. The wait takes one of the key's "
        "places for open waits (ML_MAX_WAITS_PER_KEY); with none left it is not honoured",
    ),
]


@router.post(
    "",
    status_code=202,
    response_model=TaskCreated,
    responses={**UPLOAD_ERRORS, **documented(409), **ACCEPTED},
    openapi_extra=SINGLE_UPLOAD_BODY,
)
async def create_detection(
    request: Request,
    key: ApiKeyDep,
    uploading: UploadingDep,
    idempotency_key: IdempotencyKeyHeader = None,
    prefer: PreferHeader = None,
    filename: Annotated[
        str | None, Query(max_length=1024, description="the raw body's file name")
    ] = None,
    model: Annotated[
        str | None, Query(description="a served model (GET /api/v1/models); default if absent")
    ] = None,
    callback_url: Annotated[
        str | None, Query(description="POSTed a signed event when the task ends (webhooks)")
    ] = None,
    original_size: ORIGINAL_SIZE_QUERY = None,
    min_score: MIN_SCORE_QUERY = None,
) -> Response:
    """Accept an image and queue it for detection; poll or stream the returned links.

    The image comes as a multipart form's `file`, or as the whole body with its image
    Content-Type (or `application/octet-stream`): then its name goes in `?filename=` or a
    `Content-Disposition` header. A form's `model` and `callback_url` fields win over the
    query's, and so does its `min_score`. With an `Idempotency-Key`, a retry with the same key,
    file, file name, model, callback URL and min_score returns the same task; with anything
    else changed it is 409."""
    await uploading.limiter.hit(key.key_id, "upload")
    timer = StageTimer()
    got = await receive_upload(request, uploading.settings.max_upload_bytes)
    timer.lap("receive")
    query = {"filename": filename, "model": model, "callback_url": callback_url}
    upload = _upload(got, key, uploading.settings, query, original_size, min_score)
    wait_s = preferred_wait(prefer or "")
    if wait_s is None:
        task_id = await _submit_once(upload, uploading, idempotency_key, timer)
        return _accepted(task_id, timer)
    status = None
    results = uploading.results
    async with watch(results, upload.task_id, key.key_id) as watching:
        task_id = await _submit_once(upload, uploading, idempotency_key, timer)
        if watching is None:  # the key holds all its places: answered without waiting
            return _accepted(task_id, timer)
        if task_id == upload.task_id:
            status = await watching.final(wait_s)
    if task_id != upload.task_id:  # a retry of an earlier request: wait on that task
        status = await _final(results, task_id, key.key_id, wait_s)
    return _accepted(task_id, timer, status, f"wait={wait_s:g}")


def _upload(
    got: Received,
    key: ApiKey,
    settings: Settings,
    query: dict[str, str | None],
    original_size: str | None,
    min_score: float | None = None,
) -> Upload:
    """The upload of `got`, its form's fields first, then the query's (`query`). A query value
    is checked even where the form's field wins: a request is never accepted with a bad one."""
    if query["model"]:
        resolve_model(settings, query["model"])
    if query["callback_url"]:
        check_callback_url(query["callback_url"])
    if original_size:
        parse_original_size(original_size)
    floor = settings.min_score_floor
    check_min_score(min_score, floor)
    requested = got.callback_url if got.callback_url is not None else query["callback_url"]
    callback = check_callback_url(requested) if requested else key.callback_url
    size = got.original_size if got.original_size is not None else original_size
    return Upload(
        got.data,
        key.key_id,
        name=got.name or query["filename"] or "",
        task_id=str(uuid.uuid4()),
        model=resolve_model(settings, got.model if got.model is not None else query["model"]),
        callback_url=callback,
        original_size=parse_original_size(size) if size else None,
        min_score=check_min_score(got.min_score if got.min_score is not None else min_score, floor),
    )


async def _submit_once(
    upload: Upload, uploading: Uploading, idempotency_key: str | None, timer: StageTimer
) -> str:
    """Submit `upload`, or with an Idempotency-Key seen before, the task that key got."""
    # the digest takes 1.8 ms on 3 MB: only when asked
    digest = upload_fingerprint(upload) if idempotency_key else ""
    claims = uploading.claims
    async with claims.once(upload.owner, idempotency_key, digest, upload.task_id) as done:
        return done or (await uploading.submitter.submit(upload, timer)).task_id


async def _final(
    results: ResultReader, task_id: str, owner: str, wait_s: float
) -> TaskStatus | None:
    try:
        statuses = [s async for s in results.updates(task_id, owner, timeout_s=wait_s)]
    except TooManyWaits:  # its place was taken in between: answered without waiting
        return None
    return statuses[-1]


def json_response(
    body: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`body` serialised once (a declared response model would be validated and dumped again)."""
    return Response(body.model_dump_json(), status, headers, media_type="application/json")


def _accepted(
    task_id: str, timer: StageTimer, status: TaskStatus | None = None, applied: str = ""
) -> Response:
    """202 with the new task's links; 200 with its status when it ended while we waited."""
    links = links_for(task_id)
    headers = {"Location": links.self, "Server-Timing": timer.header()}
    if applied:
        headers["Preference-Applied"] = applied
    if status is not None and status.status in FINAL_STATES:
        return json_response(status, 200, headers)
    return json_response(
        TaskCreated(task_id=task_id, status=TaskState.queued, links=links), 202, headers
    )


@router.get("/{task_id}", response_model=TaskStatus, responses=ERRORS)
async def get_detection(
    task_id: uuid.UUID,
    key: ApiKeyDep,
    results: ResultsDep,
    wait: Annotated[
        float, Query(ge=0, le=60, description="seconds to wait for the task to finish")
    ] = 0,
) -> Response:
    """The task's state, timestamps, and its result or error once finished."""
    if not wait:
        return json_response(await results.status(str(task_id), key.key_id))
    statuses = [s async for s in results.updates(str(task_id), key.key_id, timeout_s=wait)]
    return json_response(statuses[-1])


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
    detections = status.result.processed_detections()  # drawn on the upload, maybe shrunk
    drawing = (storage, record.upload_key, detections, settings.max_image_pixels)
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
    and keeps its result. A finished one stays as it is.

    The task stays readable until it expires: DELETE cancels, it does not remove (README)."""
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
    format: Annotated[
        SingleFormat, Query(description="jsonl, csv, coco, labelstudio, yolo or voc")
    ] = SingleFormat.jsonl,
) -> Response:
    """The task in JSON Lines, CSV (one row per detection), COCO detection JSON, Label Studio
    tasks with predictions, or a zip of its YOLO or Pascal VOC labels, named after the
    uploaded file."""
    record, status = await results.lookup(str(task_id), key.key_id)
    item = ExportItem(status, record.name, record.upload_key)
    basename = posixpath.splitext(posixpath.basename(item.name))[0] or str(task_id)
    return await export_response([item], ExportFormat(format.value), basename, storage, settings)
