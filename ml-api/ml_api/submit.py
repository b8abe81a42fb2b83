"""The one submit path of an upload and of each batch item: validate, store, record, enqueue.

A batch goes through it file by file (`start_batch`), after its quota and record.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool

from ml_api.archives import Member
from ml_api.batches import BatchRecord, BatchStore
from ml_api.batchhooks import BatchCallback
from ml_api.decodegate import DecodeGate, decode_and_release
from ml_api.intake import Intake
from ml_api.originals import Size, check_original_size, upright_size
from ml_api.queue import TaskQueue
from ml_common.contract import DetectPayload
from ml_common.errors import MLProdError
from ml_common.images import ImageInfo, ImageLimits, scan_image
from ml_common.models import default_model
from ml_common.records import TaskRecord
from ml_common.settings import Settings
from ml_common.storage import Storage
from ml_common.taskstore import TaskStore

logger = logging.getLogger(__name__)
# A JPEG or PNG this small is checked without decoding pixels in under 0.5 ms: on the event loop
# that costs less than the hop to a thread and back. Other formats may decode: a thread.
INLINE_CHECK_BYTES = 1024 * 1024
ITEMS_PER_WRITE = 100  # item ids are appended in slices, so progress shows while submitting
CHEAP_TO_CHECK = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


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


def fingerprint(*parts: bytes | str) -> str:
    """What an Idempotency-Key is checked against: a digest of the request's contents."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return digest.hexdigest()


@dataclass(frozen=True)
class Upload:
    """One image to submit, and where it comes from."""

    data: bytes
    owner: str
    name: str = ""
    batch_id: str = ""
    task_id: str = ""  # a fresh one when empty
    model: str = ""  # a served model (ml_common.models.resolve_model); "" for the default
    callback_url: str = ""  # checked (ml_common.webhooks.check_callback_url); "" for none
    original_size: Size | None = None  # the photo's size when the client shrank it (originals)
    min_score: float | None = None  # the lowest score to keep (scores); None: the setting's

    @property
    def bulk(self) -> bool:
        """Batch items wait behind single uploads, which have somebody waiting."""
        return bool(self.batch_id)


def upload_fingerprint(upload: Upload) -> str:
    """An upload's Idempotency-Key fingerprint: its bytes and everything that changes its
    task (a retry with another callback, original size or minimum score must not silently get
    the first)."""
    size = "x".join(map(str, upload.original_size)) if upload.original_size else ""
    parts = (upload.data, upload.model, upload.name, upload.callback_url, size)
    return fingerprint(*parts, *min_score_part(upload.min_score))


def min_score_part(min_score: float | None) -> tuple[str, ...]:
    """What `min_score` adds to a fingerprint: nothing when absent, so that the keys of
    requests made before it existed keep their fingerprints."""
    return () if min_score is None else (repr(min_score),)


@dataclass(frozen=True)
class Submitter:
    settings: Settings
    storage: Storage
    queue: TaskQueue
    tasks: TaskStore
    decode_gate: DecodeGate

    async def submit(self, upload: Upload, timer: StageTimer | None = None) -> TaskRecord:
        """Queue `upload` for detection; on any failure nothing of it stays behind."""
        timer = timer or StageTimer()
        info = await self._inspect(upload.data)
        timer.lap("validate")
        task_id = upload.task_id or str(uuid.uuid4())
        key = self.storage.upload_key(task_id, info.ext)
        record = TaskRecord.new(
            task_id, upload.owner, key, name=upload.name, batch_id=upload.batch_id
        )
        payload = DetectPayload(
            upload_key=key,
            created_at=record.created_at.isoformat(),
            model=upload.model or default_model(self.settings),
        )
        if upload.callback_url:
            payload["callback_url"] = upload.callback_url
        if upload.batch_id:
            payload["batch_id"] = upload.batch_id
        if upload.min_score is not None:
            payload["min_score"] = upload.min_score
        if upload.original_size:
            payload["original_size"] = self._original_size(upload.data, info, upload.original_size)
        # the record first, so that the file and the message go in one hop to a thread
        await self.tasks.create(record)
        try:
            await run_in_threadpool(self._store_and_send, upload, payload, task_id, timer)
        except MLProdError:
            # nothing half-done stays behind: the client gets no task id, so no file or record
            await self.tasks.discard(task_id)
            raise
        await self.tasks.mark_queued(task_id)
        timer.lap("enqueue")
        logger.info(
            "queued %s (%s, %d bytes)", task_id, info.format, len(upload.data),
            extra={"task_id": task_id},
        )  # fmt: skip
        return record

    async def _inspect(self, data: bytes) -> ImageInfo:
        limits = ImageLimits.from_settings(self.settings)
        if len(data) <= INLINE_CHECK_BYTES and data.startswith(CHEAP_TO_CHECK):
            info, decode_bytes = scan_image(data, limits)
        else:
            info, decode_bytes = await run_in_threadpool(scan_image, data, limits)
        if decode_bytes:  # a bitstream no structure check covers: decode it within the budget
            async with self.decode_gate.hold(info, decode_bytes):
                await run_in_threadpool(decode_and_release, data, limits)
        return info

    def _original_size(self, data: bytes, info: ImageInfo, claimed: Size) -> list[int]:
        sent = upright_size(data, info, self.settings.max_image_pixels)
        return check_original_size(claimed, sent, ImageLimits.from_settings(self.settings))

    def _store_and_send(
        self, upload: Upload, payload: DetectPayload, task_id: str, timer: StageTimer
    ) -> None:
        """Store the file, then queue its task; the file goes again if the queue refuses it."""
        self.storage.write(payload["upload_key"], upload.data)
        timer.lap("store")
        try:
            self.queue.submit(task_id, payload, bulk=upload.bulk)
        except MLProdError:
            self.storage.delete(payload["upload_key"])
            raise

    async def refuse(self, upload: Upload, error: MLProdError) -> TaskRecord:
        """Record a batch item that cannot run (not an image, too large) as failed at once."""
        return await self._record_unqueued(upload, refused=f"{error.code}: {error.detail}")

    async def record_cancelled(self, upload: Upload) -> TaskRecord:
        """Record a batch item as cancelled without storing or queueing it: its batch was
        cancelled while its files were being submitted."""
        return await self._record_unqueued(upload, cancelled_at=datetime.now(timezone.utc))

    async def _record_unqueued(
        self, upload: Upload, refused: str = "", cancelled_at: datetime | None = None
    ) -> TaskRecord:
        task_id = upload.task_id or str(uuid.uuid4())
        new = TaskRecord.new(task_id, upload.owner, "", name=upload.name, batch_id=upload.batch_id)
        record = replace(new, refused=refused, cancelled_at=cancelled_at)
        await self.tasks.create(record)
        return record


async def _submit_all(
    intake: Intake,
    batch: BatchRecord,
    submitter: Submitter,
    batches: BatchStore,
    model: str,
    hook: BatchCallback | None = None,
    min_score: float | None = None,
) -> int:
    """Submit each file as a task of `batch`; a file that is no image fails alone.

    Once the batch is cancelled (DELETE while this runs), the files left are recorded
    cancelled and never queued. The mark is read before each file, and again after each slice
    of ids is listed: DELETE marks the batch before it reads the list, so an item is either
    listed in time for DELETE to cancel it, or cancelled here."""
    members = intake.members()
    pending: list[str] = []
    done, cancelled = 0, False
    while (member := await run_in_threadpool(next, members, None)) is not None:
        cancelled = cancelled or await batches.is_cancelled(batch.batch_id)
        if cancelled:
            pending.append(await _record_cancelled(member, batch, submitter, hook))
        else:
            pending.append(await _submit_one(member, batch, submitter, model, hook, min_score))
        if len(pending) >= ITEMS_PER_WRITE:
            cancelled = await _list_items(batches, submitter, batch.batch_id, pending, hook)
            done, pending = done + len(pending), []
    await _list_items(batches, submitter, batch.batch_id, pending, hook)
    return done + len(pending)


async def _list_items(
    batches: BatchStore,
    submitter: Submitter,
    batch_id: str,
    task_ids: list[str],
    hook: BatchCallback | None = None,
) -> bool:
    """Add `task_ids` to the batch; if it was cancelled meanwhile, cancel them too, and count
    the ones no worker has started final now, as DELETE does for those it listed. Whether the
    batch is cancelled."""
    await batches.add_items(batch_id, task_ids)
    if not await batches.is_cancelled(batch_id):
        return False
    await submitter.tasks.cancel(task_ids)
    if hook is not None:
        await hook.cancelled(task_ids)
    return True


async def _record_cancelled(
    member: Member, batch: BatchRecord, submitter: Submitter, hook: BatchCallback | None
) -> str:
    upload = Upload(b"", batch.owner, member.name, batch.batch_id, str(uuid.uuid4()))
    task_id = (await submitter.record_cancelled(upload)).task_id
    if hook is not None:
        await hook.cancelled([task_id])  # final at once: it counts toward batch.completed
    return task_id


async def _submit_one(
    member: Member,
    batch: BatchRecord,
    submitter: Submitter,
    model: str,
    hook: BatchCallback | None = None,
    min_score: float | None = None,
) -> str:
    data, task_id = member.data or b"", str(uuid.uuid4())
    upload = Upload(data, batch.owner, member.name, batch.batch_id, task_id, model=model,
                    original_size=member.original_size, min_score=min_score)  # fmt: skip
    error = member.error
    if error is None:
        try:
            return (await submitter.submit(upload)).task_id
        except MLProdError as exc:
            error = exc
    refused = (await submitter.refuse(upload, error)).task_id
    if hook is not None:
        await hook.refused(refused)  # final at once: counted, and toward batch.completed
    return refused


async def start_batch(
    intake: Intake,
    batch: BatchRecord,
    submitter: Submitter,
    batches: BatchStore,
    settings: Settings,
    model: str,
    callback: str = "",
    min_score: float | None = None,
) -> None:
    """Take the key's quota, create the batch and submit each of its files as a task; with a
    `callback`, the batch sends `batch.completed` once every item has ended; `min_score`:
    the lowest score each item keeps (None: the setting's)."""
    per_day = settings.batch_max_items_per_key_per_day
    await batches.take_quota(batch.owner, intake.count, per_day)
    await batches.create(batch)
    hook = BatchCallback(batches.redis, submitter.queue, batches.ttl_s, batch.batch_id)
    if callback:
        await hook.arm(callback)
    total = await _submit_all(intake, batch, submitter, batches, model, hook, min_score)
    await hook.seal(total)  # its counts know their end (ml_common.batchhooks)
    logger.info("batch %s: %d items queued", batch.batch_id, total)
