"""Batch records, per-key batch quotas and idempotency keys: the API's stores of them.

A batch is a hash (owner, creation time, total) and a list of its items' task ids; each item
is an ordinary task with its own record, which names its batch. Their Redis keys are built in
`ml_common.records`, with every other `mlprod:*` key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from redis import asyncio as aioredis

from ml_common.batchhooks import COUNTED, EXPECTED, batch_counts
from ml_common.errors import BatchNotFound, BatchTooLarge, IdempotencyConflict, backend_errors
from ml_common.records import (
    as_text,
    batch_events_channel,
    batch_items_key,
    batch_key,
    batch_started_key,
    idempotency_key,
    now_iso,
    quota_key,
)
from ml_common.schemas import TaskState

QUOTA_WINDOW_S = 24 * 3600
CANCELLED_AT = "cancelled_at"  # the batch's cancel mark: files submitted after it never run


@dataclass(frozen=True)
class BatchRecord:
    """One batch, kept as a Redis hash at `batch_key(batch_id)`."""

    batch_id: str
    owner: str
    created_at: datetime
    total: int = 0
    # its counts are kept as items start and end (ml_common.batchhooks); False for a batch
    # created before they were, whose counts are read item by item
    counted: bool = False
    counts: dict[TaskState, int] = field(default_factory=dict)
    sealed: bool = False  # every file is submitted

    @classmethod
    def new(cls, batch_id: str, owner: str) -> BatchRecord:
        return cls(batch_id, owner, datetime.now(timezone.utc), counted=True)

    def to_hash(self) -> dict[str, str]:
        fields = {
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "total": str(self.total),
        }
        return {**fields, COUNTED: "1"} if self.counted else fields

    @classmethod
    def from_hash(
        cls, batch_id: str, raw: Mapping[str | bytes, str | bytes], started: int = 0
    ) -> BatchRecord | None:
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        if "owner" not in fields or "created_at" not in fields:
            return None
        return cls(
            batch_id,
            fields["owner"],
            datetime.fromisoformat(fields["created_at"]),
            int(fields.get("total", "0")),
            counted=COUNTED in fields,
            counts=batch_counts(raw, started),
            sealed=EXPECTED in fields,
        )


class BatchStore:
    """The API's (asyncio) store of batches; Redis failures surface as BackendUnavailable."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    async def create(self, record: BatchRecord) -> None:
        with backend_errors("the result store is unreachable; nothing was stored"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(batch_key(record.batch_id), mapping=record.to_hash())  # type: ignore[arg-type]
                pipe.expire(batch_key(record.batch_id), self.ttl_s)
                await pipe.execute()

    async def add_items(self, batch_id: str, task_ids: list[str]) -> None:
        """Append task ids to the batch and count them in its total."""
        if not task_ids:
            return
        with backend_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(batch_items_key(batch_id), *task_ids)
                pipe.expire(batch_items_key(batch_id), self.ttl_s)
                pipe.hincrby(batch_key(batch_id), "total", len(task_ids))
                pipe.publish(batch_events_channel(batch_id), "added")
                await pipe.execute()

    async def cancel(self, batch_id: str) -> None:
        """Mark the batch cancelled: its files still being submitted are recorded cancelled."""
        with backend_errors():
            await self.redis.hsetnx(batch_key(batch_id), CANCELLED_AT, now_iso())

    async def is_cancelled(self, batch_id: str) -> bool:
        with backend_errors():
            return bool(await self.redis.hexists(batch_key(batch_id), CANCELLED_AT))

    async def get(self, batch_id: str) -> BatchRecord | None:
        """The batch with its counts: two commands, however many items it has."""
        with backend_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(batch_key(batch_id))
                pipe.scard(batch_started_key(batch_id))
                fields, started = await pipe.execute()
        return BatchRecord.from_hash(batch_id, fields, int(started))

    async def owned(self, batch_id: str, owner: str) -> BatchRecord:
        """The batch; another key's batch reads as unknown (BatchNotFound)."""
        batch = await self.get(batch_id)
        if batch is None or batch.owner != owner:
            raise BatchNotFound(f"no batch {batch_id}")
        return batch

    async def items(self, batch_id: str, start: int = 0, stop: int = -1) -> list[str]:
        """Task ids from `start` to `stop` (inclusive; -1 is the last)."""
        with backend_errors():
            ids = await self.redis.lrange(batch_items_key(batch_id), start, stop)
        return [as_text(i) for i in ids]

    async def take_quota(self, owner: str, items: int, per_day: int) -> None:
        """Count `items` against the key's daily batch items; BatchTooLarge past `per_day`."""
        name = quota_key(owner)
        with backend_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(name, items)
                pipe.expire(name, QUOTA_WINDOW_S, nx=True)
                used, _ = await pipe.execute()
            if used > per_day:
                await self.redis.decrby(name, items)
                raise BatchTooLarge(
                    f"this API key may submit {per_day} batch items a day; "
                    f"{used - items} were used and this batch has {items}"
                )


class IdempotencyStore:
    """`Idempotency-Key` claims: the first request with a key does the work, and a retry with
    the same key and body gets the same id back; Redis's SET NX settles concurrent ones."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    async def claim(self, owner: str, key: str, fingerprint: str, new_id: str) -> str | None:
        """None when this request owns the key (go on with `new_id`); else the id it got
        before. IdempotencyConflict when the key came with a different body."""
        name = idempotency_key(owner, key)
        value = json.dumps({"fingerprint": fingerprint, "id": new_id})
        with backend_errors():
            if await self.redis.set(name, value, nx=True, ex=self.ttl_s):
                return None
            raw = await self.redis.get(name)
        if raw is None:  # expired between the two calls: take it afresh
            return await self.claim(owner, key, fingerprint, new_id)
        earlier = json.loads(raw)
        if earlier["fingerprint"] != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request (its files, file "
                "names, model or callback_url differ)"
            )
        return str(earlier["id"])

    @asynccontextmanager
    async def once(
        self, owner: str, key: str | None, fingerprint: str, new_id: str
    ) -> AsyncIterator[str | None]:
        """Yield the id an earlier request with `key` got, or None to do the work now (a
        failure inside then releases the key). Without a key, always None."""
        earlier = await self.claim(owner, key, fingerprint, new_id) if key else None
        if earlier is not None or key is None:
            yield earlier
            return
        try:
            yield None
        except BaseException:
            await self.release(owner, key)
            raise

    async def release(self, owner: str, key: str) -> None:
        """Forget a claim whose request failed, so that a retry can do the work."""
        with backend_errors():
            await self.redis.delete(idempotency_key(owner, key))
