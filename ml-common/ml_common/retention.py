"""Retention: delete stored images past their retention, and uploads no task will ever read.

Both work the same on a folder and on a bucket: the bucket is listed by day prefix
(``upload/2026-11-27/``), so no lifecycle rule has to be kept in step with ML_RETENTION_DAYS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ml_common.settings import Settings
from ml_common.storage import open_storage
from ml_common.taskstore import RecordStore

logger = logging.getLogger(__name__)
ORPHAN_GRACE_S = 3600


@dataclass(frozen=True)
class CleanupReport:
    expired: int
    orphans: int


def remove_orphan_uploads(settings: Settings, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Delete uploads whose task was never queued (the API died between store and enqueue).

    An upload is an orphan when, `grace_s` after it was written, its task record is gone or
    was never marked queued nor started. The client of such an upload never got a task id.
    """
    storage = open_storage(settings)
    records = RecordStore.connect(settings)
    cutoff = time.time() - grace_s
    removed = 0
    for key, written in storage.uploads():
        if written > cutoff:
            continue
        _, _, task_id, _ = storage.parse(key)
        record = records.get(task_id)
        if record is not None and (record.queued or record.started_at is not None):
            continue
        if records.has_result(task_id):
            continue
        storage.delete(key)
        records.discard(task_id)
        logger.info("removed orphan upload %s", key, extra={"task_id": task_id})
        removed += 1
    return removed


def cleanup(settings: Settings, days: int | None = None) -> CleanupReport:
    days = days or settings.retention_days
    expired = open_storage(settings).purge_older_than(days)
    orphans = remove_orphan_uploads(settings)
    logger.info("cleanup: %d files past %d days, %d orphan uploads", expired, days, orphans)
    return CleanupReport(expired, orphans)
