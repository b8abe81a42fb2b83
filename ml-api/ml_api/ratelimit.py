"""A per-key fixed-window rate limit kept in Redis, so every API replica shares it."""

from __future__ import annotations

import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ml_common.errors import BackendUnavailable, RateLimited

WINDOW_S = 60


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, per_minute: int) -> None:
        self.redis = redis
        self.per_minute = per_minute

    async def hit(self, key_id: str, bucket: str) -> None:
        """Count one request; raise RateLimited past the limit for this minute."""
        window = int(time.time() // WINDOW_S)
        name = f"mlprod:rate:{bucket}:{key_id}:{window}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW_S + 5)
                count, _ = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("the result store is unreachable; try again shortly") from exc
        if int(count) > self.per_minute:
            retry_after = WINDOW_S - int(time.time()) % WINDOW_S
            raise RateLimited(
                f"more than {self.per_minute} {bucket} requests this minute", max(retry_after, 1)
            )
