"""/app/...: the session-protected JSON endpoints the page calls; each proxies to the API."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ml_client.api import relay_events
from ml_client.deps import ApiDep, CsrfDep, HistoryDep, OriginalsDep, SignedIn, UserDep
from ml_client.errors import UpstreamError
from ml_client.middleware import IMAGE_CSP
from ml_client.schemas import HistoryEntry, HistoryItem, TaskList
from ml_client.uploads import UploadsDep, chosen_min_score, chosen_model, compare_group
from ml_common.errors import TaskNotFound
from ml_common.schemas import ErrorOut, TaskCreated, TaskStatus

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/app", tags=["web client"])

PRIVATE = {"Cache-Control": "private, max-age=3600", "Content-Security-Policy": IMAGE_CSP}


@router.post("/uploads", status_code=202, dependencies=[SignedIn, CsrfDep])
async def upload(request: Request, uploads: UploadsDep) -> TaskCreated:
    """Send one image to the API; the body is read only after the session and token check."""
    async with request.form(max_files=1, max_fields=5) as form:
        filename, data, media_type = await uploads.read(form.get("file"))
        model = chosen_model(form.get("model"))
        compare = compare_group(form.get("compare"))
        original_size = form.get("original_size")  # the page shrank the photo; the API checks
        min_score = chosen_min_score(form.get("min_score"), request.query_params.get("min_score"))
    size = original_size if isinstance(original_size, str) and original_size else None
    created = await uploads.api.submit(filename, data, media_type, model, size, min_score)
    await uploads.remember(created.task_id, filename, data, compare_id=compare)
    logger.info("user %s submitted task %s", uploads.user, created.task_id)
    return created


async def _item(api: ApiDep, entry: HistoryEntry) -> HistoryItem:
    try:
        return HistoryItem(**entry.model_dump(), status=await api.status(entry.task_id))
    except UpstreamError as exc:
        return HistoryItem(**entry.model_dump(), error=ErrorOut(code=exc.code, detail=exc.detail))


@router.get("/tasks")
async def list_tasks(
    user: UserDep, api: ApiDep, history: HistoryDep, originals: OriginalsDep
) -> TaskList:
    """The user's recent tasks, newest first, each with its current state.

    Tasks whose results the API no longer keeps are dropped from the history here.
    """
    entries = await history.entries(user)
    items = await asyncio.gather(*(_item(api, e) for e in entries))
    kept = []
    for item in items:
        if item.error is not None and item.error.code == TaskNotFound.code:
            await history.remove(user, item.task_id)
            await run_in_threadpool(originals.delete, item.task_id)
        else:
            kept.append(item)
    return TaskList(tasks=kept)


@router.get("/tasks/{task_id}")
async def get_task(
    task_id: uuid.UUID, user: UserDep, api: ApiDep, history: HistoryDep
) -> TaskStatus:
    await history.find(user, str(task_id))
    return await api.status(str(task_id))


@router.delete("/tasks/{task_id}", status_code=204, dependencies=[SignedIn, CsrfDep])
async def forget_task(
    task_id: uuid.UUID, user: UserDep, history: HistoryDep, originals: OriginalsDep
) -> Response:
    """Remove a task from the user's history (the API keeps it until it expires)."""
    await history.remove(user, str(task_id))
    await run_in_threadpool(originals.delete, str(task_id))
    return Response(status_code=204)


@router.get("/tasks/{task_id}/image", response_class=Response)
async def get_annotated_image(
    task_id: uuid.UUID, user: UserDep, api: ApiDep, history: HistoryDep
) -> Response:
    """The API's annotated JPEG, with its boxes drawn in."""
    await history.find(user, str(task_id))
    return Response(await api.image(str(task_id)), media_type="image/jpeg", headers=PRIVATE)


@router.get("/tasks/{task_id}/export", response_class=Response)
async def export_task(
    task_id: uuid.UUID, user: UserDep, api: ApiDep, history: HistoryDep
) -> Response:
    """The API's CSV of the task: the batch export's columns, one row per detection. Its
    download is named by the page (the `download` attribute), so the header names none."""
    await history.find(user, str(task_id))
    body = await api.export_task(str(task_id), "csv")
    headers = {"Content-Disposition": "attachment", "Cache-Control": "no-store"}
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/tasks/{task_id}/original", response_class=FileResponse)
async def get_original_image(
    task_id: uuid.UUID, user: UserDep, history: HistoryDep, originals: OriginalsDep
) -> FileResponse:
    """The image as uploaded; the page draws its own boxes over it."""
    await history.find(user, str(task_id))
    original = await run_in_threadpool(originals.find, str(task_id))
    return FileResponse(original.path, media_type=original.media_type, headers=PRIVATE)


@router.get("/tasks/{task_id}/events", response_class=StreamingResponse)
async def stream_task_events(
    task_id: uuid.UUID, user: UserDep, api: ApiDep, history: HistoryDep
) -> StreamingResponse:
    """The API's server-sent `status` events, relayed as they come."""
    await history.find(user, str(task_id))
    return relayed(await api.open_events(str(task_id)), str(task_id))


def relayed(upstream: httpx.Response, about: str) -> StreamingResponse:
    """An event stream of the API passed on to the browser as it comes."""
    return StreamingResponse(
        relay_events(upstream, about),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(upstream.aclose),
    )
