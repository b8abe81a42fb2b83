"""What the API's and the web client's rate limits share: `limits` storage on a Redis pool.

Needs the `limits` package (the api and client extras); the worker never imports this.
"""

from __future__ import annotations

import time

from limits.aio.storage import RedisStorage
from redis import asyncio as aioredis


def redis_storage(redis: aioredis.Redis, key_prefix: str) -> RedisStorage:
    """A `limits` storage on the connection pool the process already has (its URL, its timeouts)."""
    return RedisStorage(
        "async+redis://",
        implementation="redispy",
        key_prefix=key_prefix,
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # typed as scalars
    )


def retry_after(reset_time: float) -> int:
    """Whole seconds until a moving window frees a slot (at least 1), for `Retry-After`."""
    return max(int(reset_time - time.time()) + 1, 1)
