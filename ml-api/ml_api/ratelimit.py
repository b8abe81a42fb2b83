"""A per-key moving-window rate limit kept in Redis (the `limits` library), shared by replicas."""

from __future__ import annotations

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from redis import asyncio as aioredis

from ml_common.errors import RateLimited, backend_errors
from ml_common.ratelimits import redis_storage, retry_after
from ml_common.records import RATE_PREFIX


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, per_minute: int) -> None:
        self.limiter = MovingWindowRateLimiter(redis_storage(redis, RATE_PREFIX))
        self.per_minute = per_minute

    async def hit(self, key_id: str, bucket: str, cost: int = 1) -> None:
        """Count `cost` requests atomically; RateLimited if the last minute is full.

        A request of several (a batch, one per file) takes what is left of the minute, up to its
        cost: it is refused only when nothing is left, never for its size alone."""
        item = RateLimitItemPerMinute(self.per_minute, namespace=bucket)
        counted = cost
        with backend_errors():
            if cost > 1:
                room = (await self.limiter.get_window_stats(item, key_id)).remaining
                counted = max(1, min(cost, room))
            if await self.limiter.hit(item, key_id, cost=counted):
                return
            stats = await self.limiter.get_window_stats(item, key_id)
        raise RateLimited(
            f"more than {self.per_minute} {bucket} requests in a minute"
            + (" (each file of a batch counts as one)" if cost > 1 else ""),
            retry_after(stats.reset_time),
        )
