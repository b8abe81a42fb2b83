"""The stores of the task record: `TaskStore` for the API (asyncio), `RecordStore` for the worker
and the retention clean-up (blocking). Both use the keys and the hash conversion of
`ml_common.records`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple, Protocol

import redis
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ml_common.errors import backend_errors
from ml_common.records import (
    CANCELLED_AT,
    QUEUED,
    READY_PATTERN,
    READY_TTL_S,
    STARTED_AT,
    ReadyModel,
    TaskRecord,
    meta_key,
    now_iso,
    record_key,
)
from ml_common.settings import Settings

logger = logging.getLogger(__name__)

# Store a Celery state (its meta, kept `ttl` seconds, 0: for ever) and PUBLISH it, unless the
# task already succeeded: a task redelivered after its result was stored must not overwrite it.
# Celery's own Redis backend checks with a GET and then SETs: two round trips, and a race.
_STORE_STATE_FN = """
local function store_state(key, meta, ttl)
  local current = redis.call('GET', key)
  if current then
    local ok, old = pcall(cjson.decode, current)
    if ok and type(old) == 'table' and old['status'] == 'SUCCESS' then return 0 end
  end
  if tonumber(ttl) > 0 then
    redis.call('SET', key, meta, 'EX', ttl)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
"""
# KEYS: the meta key; ARGV: the meta, its ttl
STORE_STATE_LUA = _STORE_STATE_FN + "return store_state(KEYS[1], ARGV[1], ARGV[2])"
# A task starts: started_at on its record before STARTED is published (a client woken by it
# finds both), then whether the record carries a cancel mark.
# KEYS: the meta key, the record key; ARGV: the STARTED meta, its ttl, started_at
_START_LUA = (
    _STORE_STATE_FN
    + f"""
redis.call('HSET', KEYS[2], '{STARTED_AT}', ARGV[3])
store_state(KEYS[1], ARGV[1], ARGV[2])
return redis.call('HEXISTS', KEYS[2], '{CANCELLED_AT}')
"""
)


class Lookup(NamedTuple):
    """A task's record and Celery's result meta, read together."""

    record: TaskRecord | None
    meta: dict[str, Any] | None


class Listener(Protocol):
    message: str | None  # what woke it, when that was one message (Celery's meta, as JSON)

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
            await self.redis.hset(record_key(task_id), QUEUED, "1")
        except RedisError:
            logger.warning("could not mark the task queued", extra={"task_id": task_id})

    async def cancel(self, task_ids: Sequence[str]) -> None:
        """Set the durable cancel mark the worker checks before it runs the model."""
        when = now_iso()
        with backend_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hset(record_key(task_id), CANCELLED_AT, when)
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
        self._start = client.register_script(_START_LUA)

    @classmethod
    def connect(cls, settings: Settings) -> RecordStore:
        client = redis.Redis.from_url(
            str(settings.result_backend), socket_timeout=5, decode_responses=True
        )
        return cls(client)

    def start(self, task_id: str, started_meta: str, ttl_s: int) -> bool:
        """Mark the task started (its record's started_at, and Celery's STARTED meta, stored
        and published as Celery's backend would), in one round trip; whether it carries a
        cancel mark, which the worker honours before inference."""
        keys = [meta_key(task_id), record_key(task_id)]
        return bool(self._start(keys=keys, args=[started_meta, ttl_s, now_iso()]))

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
