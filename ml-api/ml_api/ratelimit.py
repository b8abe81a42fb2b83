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
        """Count `cost` requests atomically; RateLimited if the last minute has no room for them.

        A cost past the limit counts as the limit: it then needs the whole minute, but is never
        refused for its size alone."""
        item = RateLimitItemPerMinute(self.per_minute, namespace=bucket)
        cost = min(cost, self.per_minute)
        with backend_errors():
            if await self.limiter.hit(item, key_id, cost=cost):
                return
            stats = await self.limiter.get_window_stats(item, key_id)
        raise RateLimited(
            f"more than {self.per_minute} {bucket} requests in a minute"
            + (f" (this one counts as {cost}: one per file)" if cost > 1 else ""),
            retry_after(stats.reset_time),
        )
