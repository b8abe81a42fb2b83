"""/app/batches/...: several files of one upload sent as one batch of the API, and its exports."""

from __future__ import annotations

import logging
import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ml_client.api import BATCHES
from ml_client.deps import ApiDep, CsrfDep, SignedIn
from ml_client.routes import relayed
from ml_client.uploads import UploadsDep, chosen_min_score, chosen_model
from ml_common.errors import InvalidImage
from ml_common.schemas import BatchStatus, ModelList

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/app", tags=["web client"])

# The page sends a long upload in requests of at most this many files (static/js/batch.js).
PAGE_BATCH_FILES = 50
EXPORTS = {
    "coco": ("coco.json", "application/json"),
    "csv": ("csv", "text/csv; charset=utf-8"),
    "labelstudio": ("labelstudio.json", "application/json"),
    "yolo": ("yolo.zip", "application/zip"),
    "voc": ("voc.zip", "application/zip"),
}
ExportName = Literal["coco", "csv", "labelstudio", "yolo", "voc"]


@router.post("/batches", status_code=202, dependencies=[SignedIn, CsrfDep])
async def create_batch(request: Request, uploads: UploadsDep) -> BatchStatus:
    """Send several images as one batch of the API; its items come back in the files' order,
    each added to the user's history like a single upload."""
    async with request.form(max_files=PAGE_BATCH_FILES, max_fields=2) as form:
        files = [await uploads.read(f) for f in form.getlist("files")]
        model = chosen_model(form.get("model"))
        min_score = chosen_min_score(form.get("min_score"), request.query_params.get("min_score"))
    if not files:
        raise InvalidImage("choose an image file to upload")
    created = await uploads.api.create_batch(files, model, min_score)
    batch = await uploads.api.batch(created.batch_id, limit=len(files))
    for item, (_, data, _) in zip(batch.items, files, strict=False):
        await uploads.remember(item.task_id, item.file_name, data, batch.batch_id)
    logger.info("user %s submitted batch %s (%d files)", uploads.user, batch.batch_id, len(files))
    return batch


@router.get("/batches/{batch_id}", dependencies=[SignedIn])
async def get_batch(batch_id: uuid.UUID, api: ApiDep) -> BatchStatus:
    """The batch's counts and items: the API answers 404 for another user's batch."""
    return await api.batch(str(batch_id), limit=PAGE_BATCH_FILES)


@router.get("/batches/{batch_id}/events", dependencies=[SignedIn])
async def stream_batch_events(batch_id: uuid.UUID, api: ApiDep) -> StreamingResponse:
    """The API's `progress` events (the batch's counts), relayed as they come."""
    return relayed(await api.open_stream(f"{BATCHES}/{batch_id}/events"), str(batch_id))


@router.get("/batches/{batch_id}/export", response_class=Response, dependencies=[SignedIn])
async def export_batch(batch_id: uuid.UUID, api: ApiDep, format: ExportName = "coco") -> Response:
    """The whole upload as COCO detection JSON, CSV, Label Studio tasks, or YOLO or Pascal VOC
    labels (zips), named after the day and its size."""
    batch = await api.batch(str(batch_id), limit=1)
    body = await api.export_batch(str(batch_id), format)
    suffix, media_type = EXPORTS[format]
    name = f"detections-{batch.created_at:%Y-%m-%d-%H%M}-{batch.total}-images.{suffix}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return Response(body, media_type=media_type, headers=headers)


@router.get("/models", dependencies=[SignedIn])
async def list_models(api: ApiDep) -> ModelList:
    """The models the API serves, its default first."""
    return await api.models()
