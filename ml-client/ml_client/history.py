"""Each user's recent tasks, kept in Redis so they survive reloads, restarts and replicas.

The history is the first access check (a user reads only the tasks in their own history); the
API is the second: each user is an owner of their own there (``X-On-Behalf-Of``), so a task id
that reached the wrong history would still read as unknown.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from redis import asyncio as aioredis

from ml_client.schemas import HistoryEntry
from ml_common.errors import TaskNotFound, backend_errors
from ml_common.images import FORMATS
from ml_common.records import history_key
from ml_common.storage import atomic_write

HISTORY_MAX = 30  # the default of ML_CLIENT_HISTORY_MAX
NAME_MAX = 120


class TaskHistory:
    def __init__(self, redis: aioredis.Redis, ttl_s: int, max_entries: int = HISTORY_MAX) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_entries = max_entries

    async def entries(self, user: str) -> list[HistoryEntry]:
        """The user's tasks, newest first."""
        with backend_errors("the task history is unavailable right now"):
            raw = await self.redis.lrange(history_key(user), 0, self.max_entries - 1)
        return [HistoryEntry.model_validate_json(item) for item in raw]

    async def add(self, user: str, entry: HistoryEntry) -> list[str]:
        """Record a task; returns the ids of older tasks that fell off the end."""
        key = history_key(user)
        with backend_errors("the task history is unavailable right now"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, entry.model_dump_json())
                pipe.lrange(key, self.max_entries, -1)
                pipe.ltrim(key, 0, self.max_entries - 1)
                pipe.expire(key, self.ttl_s)
                _, dropped, _, _ = await pipe.execute()
        return [HistoryEntry.model_validate_json(item).task_id for item in dropped]

    async def remove(self, user: str, task_id: str) -> None:
        entry = await self.find(user, task_id)
        with backend_errors("the task history is unavailable right now"):
            await self.redis.lrem(history_key(user), 0, entry.model_dump_json())

    async def find(self, user: str, task_id: str) -> HistoryEntry:
        """The user's entry for `task_id`; another user's task reads as unknown."""
        for entry in await self.entries(user):
            if entry.task_id == task_id:
                return entry
        raise TaskNotFound(f"no task {task_id} in your recent detections")


@dataclass(frozen=True)
class Original:
    path: Path
    media_type: str


@dataclass(frozen=True)
class Originals:
    """The uploaded images, kept by the client so it can draw boxes over them later."""

    root: Path
    max_age_s: int

    def save(self, task_id: str, data: bytes) -> None:
        try:
            fmt = Image.open(io.BytesIO(data)).format or ""
        except (UnidentifiedImageError, OSError):
            return
        if fmt not in FORMATS:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        atomic_write(self.root / f"{task_id}.{FORMATS[fmt][0]}", data, 0o600)

    def find(self, task_id: str) -> Original:
        for ext, media_type in FORMATS.values():
            path = self.root / f"{task_id}.{ext}"
            if path.is_file():
                return Original(path, media_type)
        raise TaskNotFound(f"the uploaded image of task {task_id} is no longer kept")

    def delete(self, task_id: str) -> None:
        for ext, _ in FORMATS.values():
            (self.root / f"{task_id}.{ext}").unlink(missing_ok=True)

    def purge(self) -> int:
        """Delete originals older than `max_age_s`; returns how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - self.max_age_s
        old = [p for p in self.root.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
        for path in old:
            path.unlink(missing_ok=True)
        return len(old)
