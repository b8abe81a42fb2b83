"""The task record: its typed fields, every `mlprod:*` Redis key, and the stores that use them.

Celery's own result meta says *what* happened; the record says that a task exists at all
(so an unknown id is a 404, not an eternal PENDING), who may see it and when it started.
The API reads and writes it through `TaskStore` (asyncio); the worker and the retention
clean-up through `RecordStore` (blocking). Both share the keys and the hash conversion below.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, Protocol

import redis
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ml_common.errors import backend_errors
from ml_common.settings import Settings

logger = logging.getLogger(__name__)

RECORD_PREFIX = "mlprod:task:"
CELERY_META_PREFIX = "celery-task-meta-"
READY_PREFIX = "mlprod:ready:"
READY_PATTERN = f"{READY_PREFIX}*"
READY_TTL_S = 30  # a worker renews its readiness key every third of this
RATE_PREFIX = "mlprod:rate"  # the API's request windows (the `limits` library adds the rest)
LOGIN_PREFIX = "mlprod:client:login"  # the web client's sign-in windows (likewise)


def record_key(task_id: str) -> str:
    return f"{RECORD_PREFIX}{task_id}"


def meta_key(task_id: str) -> str:
    """Celery's Redis result key, which Celery also PUBLISHes on whenever it stores a state."""
    return f"{CELERY_META_PREFIX}{task_id}"


def webhook_key(task_id: str) -> str:
    """The task's webhook delivery (hash: webhook_id, url, event, body, owner, state)."""
    return f"mlprod:webhook:{task_id}"


def deliveries_key(task_id: str) -> str:
    """The attempts of the task's webhook delivery (list of JSON, oldest first)."""
    return f"mlprod:deliveries:{task_id}"


def ready_key(host: str, pid: int, model: str = "") -> str:
    """Present while the worker process `pid` on `host` has `model` loaded; its value is the
    JSON of `ReadyModel`."""
    return f"{READY_PREFIX}{model}:{host}:{pid}" if model else f"{READY_PREFIX}{host}:{pid}"


@dataclass(frozen=True)
class ReadyModel:
    """What a worker process announces for each model it has loaded and warm."""

    model: str
    version: str

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "version": self.version})

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> ReadyModel | None:
        try:
            value = json.loads(raw or "")
            return cls(str(value["model"]), str(value["version"]))
        except (ValueError, KeyError, TypeError):
            return None  # a beacon of a worker older than per-model readiness


def session_key(session_id: str) -> str:
    """A live web-client session; the id itself is never stored."""
    return f"mlprod:client:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def history_key(user: str) -> str:
    """A web-client user's recent tasks."""
    return f"mlprod:client:history:{hashlib.sha256(user.encode()).hexdigest()[:32]}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


_OWNER = "owner"
_UPLOAD_KEY = "upload_key"
_CREATED_AT = "created_at"
_QUEUED = "queued"  # set once the broker took the task; only the orphan clean-up reads it
_STARTED_AT = "started_at"
_NAME = "name"  # the uploaded file's name (exports are named after it)
_BATCH_ID = "batch_id"
_CANCELLED_AT = "cancelled_at"  # the durable cancel mark the worker checks before inference
_REFUSED = "refused"  # "code: detail" of a batch item refused before it was queued


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class TaskRecord:
    """One task's record, kept as a Redis hash at `record_key(task_id)`."""

    task_id: str
    owner: str
    upload_key: str
    created_at: datetime
    queued: bool = False
    started_at: datetime | None = None
    name: str = ""
    batch_id: str = ""
    cancelled_at: datetime | None = None
    refused: str = ""

    @classmethod
    def new(
        cls, task_id: str, owner: str, upload_key: str, *, name: str = "", batch_id: str = ""
    ) -> TaskRecord:
        now = datetime.now(timezone.utc)
        return cls(task_id, owner, upload_key, now, name=name, batch_id=batch_id)

    def to_hash(self) -> dict[str, str]:
        """The hash fields; the task id is in the key, and unset fields are left out."""
        fields = {
            _OWNER: self.owner,
            _UPLOAD_KEY: self.upload_key,
            _CREATED_AT: self.created_at.isoformat(),
        }
        if self.queued:
            fields[_QUEUED] = "1"
        if self.started_at is not None:
            fields[_STARTED_AT] = self.started_at.isoformat()
        if self.cancelled_at is not None:
            fields[_CANCELLED_AT] = self.cancelled_at.isoformat()
        optional = {_NAME: self.name, _BATCH_ID: self.batch_id, _REFUSED: self.refused}
        return fields | {k: v for k, v in optional.items() if v}

    @classmethod
    def from_hash(
        cls, task_id: str, fields: Mapping[str | bytes, str | bytes]
    ) -> TaskRecord | None:
        """The record, or None when the hash lacks its owner or creation time (no task)."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        if _OWNER not in text or _CREATED_AT not in text:
            return None
        started, cancelled = text.get(_STARTED_AT), text.get(_CANCELLED_AT)
        return cls(
            task_id=task_id,
            owner=text[_OWNER],
            upload_key=text.get(_UPLOAD_KEY, ""),
            created_at=datetime.fromisoformat(text[_CREATED_AT]),
            queued=bool(text.get(_QUEUED)),
            started_at=datetime.fromisoformat(started) if started else None,
            name=text.get(_NAME, ""),
            batch_id=text.get(_BATCH_ID, ""),
            cancelled_at=datetime.fromisoformat(cancelled) if cancelled else None,
            refused=text.get(_REFUSED, ""),
        )


class Lookup(NamedTuple):
    """A task's record and Celery's result meta, read together."""

    record: TaskRecord | None
    meta: dict[str, Any] | None


class Listener(Protocol):
    async def wait(self, timeout_s: float) -> bool:
        """Whether the channel had a message (or a reconnect) before `timeout_s` ran out."""


class Channels(Protocol):
    """Redis channels to listen on (the API's shared subscriber)."""

    def listen(self, channel: str) -> AbstractAsyncContextManager[Listener]: ...


class TaskStore:
    """The API's (asyncio) store: records, Celery's result meta, and worker readiness.

    Failures surface as BackendUnavailable, except where the API goes on regardless.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    async def create(self, record: TaskRecord) -> None:
        name = record_key(record.task_id)
        with backend_errors("the result store is unreachable; nothing was stored"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, mapping=record.to_hash())  # type: ignore[arg-type]  # invariant keys
                pipe.expire(name, self.ttl_s)
                await pipe.execute()

    async def mark_queued(self, task_id: str) -> None:
        # the task is queued whether or not the flag lands: only the orphan clean-up reads it
        try:
            await self.redis.hset(record_key(task_id), _QUEUED, "1")
        except RedisError:
            logger.warning("could not mark the task queued", extra={"task_id": task_id})

    async def cancel(self, task_ids: Sequence[str]) -> None:
        """Set the durable cancel mark the worker checks before it runs the model."""
        when = now_iso()
        with backend_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hset(record_key(task_id), _CANCELLED_AT, when)
                await pipe.execute()

    async def lookup_many(self, task_ids: Sequence[str]) -> list[Lookup]:
        """Records and Celery's metas of many tasks, in one round trip."""
        with backend_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hgetall(record_key(task_id))
                    pipe.get(meta_key(task_id))
                raw = await pipe.execute()
        return [
            Lookup(TaskRecord.from_hash(task_id, record), json.loads(meta) if meta else None)
            for task_id, record, meta in zip(task_ids, raw[::2], raw[1::2], strict=True)
        ]

    async def discard(self, task_id: str) -> None:
        try:
            await self.redis.delete(record_key(task_id))
        except RedisError:
            logger.warning(
                "could not remove the record of unqueued task", extra={"task_id": task_id}
            )

    async def lookup(self, task_id: str) -> Lookup:
        """The record and Celery's meta, read in one round trip."""
        with backend_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(record_key(task_id))
                pipe.get(meta_key(task_id))
                raw_record, raw_meta = await pipe.execute()
        meta = json.loads(raw_meta) if raw_meta else None
        return Lookup(TaskRecord.from_hash(task_id, raw_record), meta)

    async def updates(
        self, task_id: str, timeout_s: float, channels: Channels
    ) -> AsyncGenerator[Lookup, None]:
        """Yield a lookup now and again at each state Celery stores, until `timeout_s`.

        Celery PUBLISHes on the result key whenever it stores a state, so this wakes the
        moment the worker writes; nothing polls. `channels` (the API's one shared subscription)
        confirms the subscription before the first read, so no state can slip in between.
        The caller stops once it has what it needs.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with channels.listen(meta_key(task_id)) as listener:
            while True:
                yield await self.lookup(task_id)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                await listener.wait(min(remaining, 15.0))

    async def ready_workers(self) -> int:
        """How many worker processes have announced a loaded model."""
        with backend_errors():
            return len([k async for k in self.redis.scan_iter(match=READY_PATTERN, count=100)])

    async def ready_models(self) -> list[ReadyModel]:
        """One entry per worker process and model it has announced ready."""
        with backend_errors():
            keys = [k async for k in self.redis.scan_iter(match=READY_PATTERN, count=100)]
            values = await self.redis.mget(keys) if keys else []
        return [m for m in map(ReadyModel.from_json, values) if m is not None]


class RecordStore:
    """The worker's and the clean-up's (blocking) store of records and readiness.

    Redis errors propagate unchanged: the detect task retries on a lost connection.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @classmethod
    def connect(cls, settings: Settings) -> RecordStore:
        client = redis.Redis.from_url(
            str(settings.result_backend), socket_timeout=5, decode_responses=True
        )
        return cls(client)

    def mark_started(self, task_id: str) -> None:
        self.redis.hset(record_key(task_id), _STARTED_AT, now_iso())

    def is_cancelled(self, task_id: str) -> bool:
        return bool(self.redis.hexists(record_key(task_id), _CANCELLED_AT))

    def get(self, task_id: str) -> TaskRecord | None:
        return TaskRecord.from_hash(task_id, self.redis.hgetall(record_key(task_id)))

    def has_result(self, task_id: str) -> bool:
        """Whether Celery stored any state of the task (it was taken by a worker)."""
        return bool(self.redis.exists(meta_key(task_id)))

    def discard(self, task_id: str) -> None:
        self.redis.delete(record_key(task_id))

    def announce_ready(self, key: str, value: str = "ready") -> None:
        self.redis.set(key, value, ex=READY_TTL_S)

    def withdraw_ready(self, key: str) -> None:
        self.redis.delete(key)
