"""The API's part of a batch's `batch.completed` webhook: arm the batch with its callback, count
the items refused at intake as final, and seal it with its total (ml_common.batchhooks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from redis import asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from ml_api.queue import TaskQueue
from ml_common.batchhooks import CALLBACK_URL, FINISH_SCRIPT, completed_delivery, finish_args
from ml_common.errors import backend_errors
from ml_common.records import batch_key, webhook_key


@dataclass(frozen=True)
class BatchCallback:
    """One batch's callback, while the API submits its files."""

    redis: aioredis.Redis
    queue: TaskQueue
    ttl_s: int
    batch_id: str

    async def arm(self, url: str) -> None:
        """Keep the callback in the batch's hash: from now on its items' ends are counted."""
        with backend_errors():
            await self.redis.hset(batch_key(self.batch_id), CALLBACK_URL, url)

    async def refused(self, task_id: str) -> None:
        await self._finish(task_id, "failed")

    async def cancelled(self, task_id: str) -> None:
        """An item recorded cancelled at intake (the batch was cancelled while submitting)."""
        await self._finish(task_id, "cancelled")

    async def seal(self, total: int) -> None:
        """Every file is submitted: `total` items make the batch complete."""
        await self._finish("", str(total))

    async def _finish(self, task_id: str, state: str) -> None:
        args = finish_args(self.batch_id, task_id, state, self.ttl_s)
        with backend_errors():
            if await self.redis.eval(FINISH_SCRIPT, 2, *args) != 1:
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
