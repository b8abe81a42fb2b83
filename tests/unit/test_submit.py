"""The submit path: a JPEG or PNG checked on the event loop, the rest in a thread; on a failure
nothing of the upload stays behind; the malloc thresholds of the API process."""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any, cast

import pytest
from PIL import Image

from ml_api.decodegate import MIB, DecodeGate
from ml_api.malloc import keep_large_buffers
from ml_api.queue import TaskQueue
from ml_api.submit import Submitter, Upload
from ml_common.contract import DetectPayload
from ml_common.errors import QueueUnavailable, StorageUnavailable
from ml_common.records import TaskRecord
from ml_common.settings import Settings
from ml_common.storage import LocalStorage
from ml_common.taskstore import TaskStore


def image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


class Tasks:
    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.queued: set[str] = set()

    async def create(self, record: TaskRecord) -> None:
        self.records[record.task_id] = record

    async def discard(self, task_id: str) -> None:
        self.records.pop(task_id, None)

    async def mark_queued(self, task_id: str) -> None:
        self.queued.add(task_id)


class Queue:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.sent: list[tuple[str, DetectPayload]] = []

    def submit(self, task_id: str, payload: DetectPayload, *, bulk: bool = False) -> None:
        if self.fails:
            raise QueueUnavailable("the broker is down")
        self.sent.append((task_id, payload))


class BrokenStorage(LocalStorage):
    def write(self, key: str, data: bytes) -> None:
        raise StorageUnavailable("the disk is full")


def submitter(storage: LocalStorage, queue: Queue, tasks: Tasks) -> Submitter:
    settings = Settings(_env_file=None, storage_dir=storage.root)
    gate = DecodeGate(settings.decode_memory_mb * MIB)
    return Submitter(settings, storage, cast(TaskQueue, queue), cast(TaskStore, tasks), gate)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_each_format_is_stored_recorded_and_queued(tmp_path: Any, fmt: str) -> None:
    storage, queue, tasks = LocalStorage(tmp_path), Queue(), Tasks()
    record = asyncio.run(submitter(storage, queue, tasks).submit(Upload(image(fmt), "owner")))
    assert storage.read(record.upload_key) == image(fmt)
    assert tasks.records[record.task_id] == record and tasks.queued == {record.task_id}
    assert queue.sent[0][0] == record.task_id
    assert queue.sent[0][1]["upload_key"] == record.upload_key


def test_a_refused_message_leaves_neither_file_nor_record(tmp_path: Any) -> None:
    storage, tasks = LocalStorage(tmp_path), Tasks()
    upload = Upload(image("JPEG"), "owner", task_id="3f0c5a2e-8d1b-4c6f-9a7e-2b5d8c1e4f60")
    with pytest.raises(QueueUnavailable):
        asyncio.run(submitter(storage, Queue(fails=True), tasks).submit(upload))
    assert tasks.records == {} and tasks.queued == set()
    assert list(storage.uploads()) == []


def test_a_failed_write_leaves_no_record_and_sends_nothing(tmp_path: Any) -> None:
    queue, tasks = Queue(), Tasks()
    with pytest.raises(StorageUnavailable):
        asyncio.run(
            submitter(BrokenStorage(tmp_path), queue, tasks).submit(Upload(image("PNG"), "o"))
        )
    assert tasks.records == {} and queue.sent == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_api_process_keeps_large_buffers_in_the_heap() -> None:
    assert keep_large_buffers()
