"""The API's part of a batch's counts and `batch.completed` webhook: arm the batch with its
callback, count the items refused at intake and those cancelled before they started as final,
and seal it with its total (ml_common.batchhooks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from redis import asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from ml_api.queue import TaskQueue
from ml_common.batchhooks import (
    CALLBACK_URL,
    FINISH_KEYS,
    FINISH_SCRIPT,
    completed_delivery,
    finish_args,
)
from ml_common.errors import backend_errors
from ml_common.records import batch_key, webhook_key


@dataclass(frozen=True)
class BatchCallback:
    """One batch's counting, and its callback if it has one."""

    redis: aioredis.Redis
    queue: TaskQueue
    ttl_s: int
    batch_id: str

    async def arm(self, url: str) -> None:
        """Keep the callback in the batch's hash: its completion sends `batch.completed`."""
        with backend_errors():
            await self.redis.hset(batch_key(self.batch_id), CALLBACK_URL, url)

    async def refused(self, task_id: str) -> None:
        await self._finish(finish_args(self.batch_id, [task_id], "failed", self.ttl_s))

    async def cancelled(self, task_ids: list[str]) -> None:
        """Items whose cancel mark is set: final now, unless a worker has started them (it
        then finds the mark before inference and counts them, or finishes them)."""
        args = finish_args(self.batch_id, task_ids, "cancelled", self.ttl_s, unstarted_only=True)
        await self._finish(args)

    async def seal(self, total: int) -> None:
        """Every file is submitted: `total` items make the batch complete."""
        await self._finish(finish_args(self.batch_id, [], "", self.ttl_s, seal_total=total))

    async def _finish(self, args: list[str]) -> None:
        with backend_errors():
            if await self.redis.eval(FINISH_SCRIPT, FINISH_KEYS, *args) != 1:
                return
            raw = await self.redis.hgetall(batch_key(self.batch_id))
            delivery = completed_delivery(self.batch_id, raw)
            if delivery is None:
                return
            key = webhook_key(self.batch_id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={k: str(v) for k, v in asdict(delivery).items()})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        await run_in_threadpool(self.queue.redeliver, self.batch_id)  # its first attempt
