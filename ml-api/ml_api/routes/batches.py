"""/api/v1/batches: submit many images at once, follow their progress, cancel and export them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ml_api.batches import BatchRecord, BatchStore
from ml_api.batchhooks import BatchCallback
from ml_api.deps import (
    ApiKeyDep,
    BatchesDep,
    IdempotencyDep,
    IdempotencyKeyHeader,
    LimiterDep,
    QueueDep,
    SettingsDep,
    StorageDep,
    SubmitterDep,
    SubscriberDep,
    TasksDep,
    WaitSlotsDep,
)
from ml_api.downloads import event_stream, export_response
from ml_api.errors import documented
from ml_api.exports import MEDIA_TYPES, ExportFormat, ExportItem
from ml_api.intake import UPLOAD_BODY, Intake, archive_limits, form_files
from ml_api.results import build_status, state_of
from ml_api.scores import MIN_SCORE_QUERY, check_min_score
from ml_api.submit import fingerprint, min_score_part, start_batch
from ml_api.subscriber import Listener
from ml_common.models import resolve_model
from ml_common.records import TaskRecord, batch_events_channel
from ml_common.schemas import (
    FINAL_STATES,
    BatchCreated,
    BatchItem,
    BatchLinks,
    BatchStatus,
    Cancelled,
    TaskState,
    TaskStatus,
)
from ml_common.webhooks import check_callback_url

logger = logging.getLogger(__name__)
# past any batch (a day's quota is far smaller); an offset Redis cannot take would be a 503
MAX_OFFSET = 1_000_000_000
router = APIRouter(prefix="/batches", tags=["batches"])

ERRORS = documented(401, 404, 422, 429, 503)
UPLOAD_ERRORS = documented(401, 409, 413, 415, 422, 429, 503)
# a stream rereads its counts at least this often, should a message be missed (2 commands)
RECHECK_S = 30.0


def links_for_batch(batch_id: str) -> BatchLinks:
    base = f"/api/v1/batches/{batch_id}"
    return BatchLinks(self=base, events=f"{base}/events", export=f"{base}/export")


@router.post("", status_code=202, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY)
async def create_batch(
    request: Request,
    response: Response,
    key: ApiKeyDep,
    settings: SettingsDep,
    submitter: SubmitterDep,
    batches: BatchesDep,
    claims: IdempotencyDep,
    limiter: LimiterDep,
    idempotency_key: IdempotencyKeyHeader = None,
    min_score: MIN_SCORE_QUERY = None,
) -> BatchCreated:
    """Queue many images (several `files` parts, or one zip or tar archive) as one batch.

    The whole request is checked first (file count and bytes, the archive's paths, links and
    compression ratio, the key's daily quota); then each file becomes an ordinary detection
    task, and a file that is not an image fails alone. Batch items wait behind single uploads.
    A form's `min_score` wins over the query's."""
    await limiter.hit(key.key_id, "batch")
    batch = BatchRecord.new(str(uuid.uuid4()), key.key_id)
    floor = settings.min_score_floor
    check_min_score(min_score, floor)  # checked even where the form's field wins
    async with form_files(request, settings.batch_max_files) as got:
        callback = check_callback_url(got.callback_url) if got.callback_url else key.callback_url
        model = resolve_model(settings, got.model)
        score = check_min_score(got.min_score if got.min_score is not None else min_score, floor)
        limits = archive_limits(settings)
        intake = await run_in_threadpool(Intake.check, got.files, limits, got.sizes)
        files_digest = await run_in_threadpool(intake.fingerprint)  # names and bytes
        sizes = repr(got.sizes)
        digest = fingerprint(files_digest, model, callback, sizes, *min_score_part(score))
        async with claims.once(key.key_id, idempotency_key, digest, batch.batch_id) as earlier:
            if earlier is None:  # each item is an upload: the key's per-minute limit counts it
                await limiter.hit(key.key_id, "upload", cost=intake.count)
                await start_batch(
                    intake, batch, submitter, batches, settings, model, callback, score
                )
    batch_id = earlier or batch.batch_id
    found = await batches.get(batch_id)
    links = links_for_batch(batch_id)
    response.headers["Location"] = links.self
    return BatchCreated(batch_id=batch_id, total=found.total if found else 0, links=links)


class Item(NamedTuple):
    record: TaskRecord
    meta: dict[str, Any] | None
    state: TaskState  # read cheaply; the whole status (result parsed) only where needed

    def status(self) -> TaskStatus:
        return build_status(self.record, self.meta)


async def _items(
    batch_id: str, owner: str, batches: BatchStore, tasks: TasksDep, start: int = 0, stop: int = -1
) -> tuple[BatchRecord, list[Item]]:
    """The batch and its items from `start` to `stop` (inclusive; -1 the last), in order;
    another key's batch reads as unknown."""
    batch = await batches.owned(batch_id, owner)
    found = await tasks.lookup_many(await batches.items(batch_id, start, stop))
    return batch, [
        Item(f.record, f.meta, state_of(f.record, f.meta)) for f in found if f.record is not None
    ]


async def _read_progress(
    batch_id: str, owner: str, batches: BatchStore, tasks: TasksDep, offset: int, limit: int
) -> BatchStatus:
    """The batch's counts and one page of its items; a batch whose counts are kept
    (ml_common.batchhooks) reads the page alone, an older one every item."""
    batch = await batches.owned(batch_id, owner)
    if not batch.counted:
        batch, items = await _items(batch_id, owner, batches, tasks)
        counts = Counter(i.state for i in items)
        return _progress(batch, counts, items[offset : offset + limit], offset, limit)
    page: list[Item] = []
    if limit:
        page = (await _items(batch_id, owner, batches, tasks, offset, offset + limit - 1))[1]
    return _progress(batch, Counter(batch.counts), page, offset, limit)


def _progress(
    batch: BatchRecord, counts: Counter[TaskState], page: list[Item], offset: int, limit: int
) -> BatchStatus:
    final = sum(counts[s] for s in FINAL_STATES)
    return BatchStatus(
        batch_id=batch.batch_id,
        created_at=batch.created_at,
        total=batch.total,
        counts={state: counts.get(state, 0) for state in TaskState},
        finished=final >= batch.total and (batch.sealed or not batch.counted),
        items=[
            BatchItem(task_id=s.task_id, file_name=i.record.name, status=s.status, error=s.error)
            for i in page
            if (s := i.status())
        ],
        offset=offset,
        limit=limit,
        links=links_for_batch(batch.batch_id),
    )


@router.get("/{batch_id}", responses=ERRORS)
async def get_batch(
    batch_id: uuid.UUID,
    key: ApiKeyDep,
    batches: BatchesDep,
    tasks: TasksDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> BatchStatus:
    """Counts per state, the total, and one page of the items (task id, file name, state)."""
    return await _read_progress(str(batch_id), key.key_id, batches, tasks, offset, limit)


@router.get(
    "/{batch_id}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
async def stream_batch_events(
    batch_id: uuid.UUID,
    key: ApiKeyDep,
    batches: BatchesDep,
    tasks: TasksDep,
    subscriber: SubscriberDep,
    slots: WaitSlotsDep,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 600,
) -> StreamingResponse:
    """Server-sent events: a `progress` event (counts, no items) whenever they change, until
    the batch is finished or `timeout` passes. It counts among the key's open waits."""
    read = functools.partial(_read_progress, str(batch_id), key.key_id, batches, tasks, 0, 0)
    await read()  # 404/503 before the stream starts
    waiting = contextlib.ExitStack()
    waiting.enter_context(slots.hold(key.key_id))  # 429 before the stream starts

    async def events() -> AsyncIterator[str]:
        # woken through the API's one subscription whenever an item of the batch is added,
        # starts or ends (ml_common.batchhooks PUBLISHes); each read is two Redis commands
        with waiting:
            channel = batch_events_channel(str(batch_id))
            async with subscriber.listen(channel) as listener:
                async for progress in _changes(read, listener, timeout):
                    yield f"event: progress\ndata: {progress.model_dump_json()}\n\n"

    return event_stream(events())


async def _changes(
    read: Callable[[], Awaitable[BatchStatus]], listener: Listener, timeout_s: float
) -> AsyncIterator[BatchStatus]:
    """The progress now, then each time its counts change, until finished or `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline, last = loop.time() + timeout_s, None
    while True:
        now = await read()
        if last is None or now.counts != last.counts or now.total != last.total or now.finished:
            yield now
        last = now
        if now.finished or (left := deadline - loop.time()) <= 0:
            return
        await listener.wait(min(left, RECHECK_S))


@router.delete("/{batch_id}", responses=ERRORS)
async def cancel_batch(
    batch_id: uuid.UUID,
    key: ApiKeyDep,
    batches: BatchesDep,
    tasks: TasksDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> Cancelled:
    """Cancel every unfinished item: queued ones never run their model, running ones finish,
    and files of the batch still being submitted are recorded cancelled, never queued.

    The batch stays readable (its items `cancelled`) until it expires: DELETE cancels, it does
    not remove (README, "Why DELETE cancels")."""
    await batches.owned(str(batch_id), key.key_id)
    await batches.cancel(str(batch_id))  # first: submission checks it after listing each slice
    batch, items = await _items(str(batch_id), key.key_id, batches, tasks)
    open_items = [i for i in items if i.state not in FINAL_STATES]
    await tasks.cancel([i.record.task_id for i in open_items])
    if batch.counted and open_items:  # the mark is set: count the unstarted ones final now
        hook = BatchCallback(batches.redis, queue, settings.result_expires_s, batch.batch_id)
        await hook.cancelled([i.record.task_id for i in open_items])
    running = sum(i.state is TaskState.started for i in open_items)
    if not open_items:
        return Cancelled(changed=False, detail="every item had finished: unchanged")
    detail = f"{len(open_items)} items cancelled; {running} running finish first"
    return Cancelled(changed=True, detail=detail)


@router.get(
    "/{batch_id}/export",
    responses={**ERRORS, 200: {"content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}}},
    response_class=Response,
)
async def export_batch(
    batch_id: uuid.UUID,
    key: ApiKeyDep,
    batches: BatchesDep,
    tasks: TasksDep,
    storage: StorageDep,
    settings: SettingsDep,
    format: Annotated[
        ExportFormat, Query(description="jsonl, csv, coco, zip, labelstudio, yolo or voc")
    ] = ExportFormat.jsonl,
) -> Response:
    """Every item once, named after its file: JSON Lines, CSV (one row per detection), COCO
    detection JSON, a zip of the annotated images of the succeeded items, Label Studio tasks
    with predictions (pre-annotations), or a zip of YOLO txt labels or Pascal VOC XML."""
    _, items = await _items(str(batch_id), key.key_id, batches, tasks)
    exported = [ExportItem(i.status(), i.record.name, i.record.upload_key) for i in items]
    return await export_response(exported, format, f"batch-{batch_id}", storage, settings)
