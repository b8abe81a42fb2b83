"""The API's shared subscriber on a real (embedded) Valkey: fan-out, reference counting,
reconnection, and the per-key cap on open waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from ml_api.app import redis_client
from ml_api.subscriber import Subscriber, WaitSlots
from ml_common.devstack import free_port
from ml_common.errors import BackendUnavailable, TooManyWaits, backend_errors
from ml_common.settings import Settings

Scenario = Callable[[Subscriber, aioredis.Redis], Awaitable[None]]


async def _run(redis_url: str, scenario: Scenario) -> None:
    subscriber = Subscriber(redis_url, retry_s=0.05)
    await subscriber.start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await scenario(subscriber, client)
    finally:
        await client.aclose()
        await subscriber.stop()


def run(redis_url: str, scenario: Scenario) -> None:
    asyncio.run(_run(redis_url, scenario))


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def subscribed(client: aioredis.Redis) -> list[str]:
    return sorted(c.decode() for c in await client.pubsub_channels())


def test_every_listener_of_a_channel_wakes_on_one_message(redis_url: str) -> None:
    async def scenario(subscriber: Subscriber, client: aioredis.Redis) -> None:
        async with subscriber.listen("a") as one, subscriber.listen("a") as two:
            async with subscriber.listen("b") as other:
                assert await subscribed(client) == ["a", "b"]
                assert subscriber.channels == 2
                await client.publish("a", "x")  # subscribed on entry: nothing can be missed
                assert await one.wait(30) and await two.wait(30)
                assert not await other.wait(0.2)
            await eventually(lambda: _equals(subscribed(client), ["a"]))
        await eventually(lambda: _equals(subscribed(client), []))
        assert subscriber.channels == 0

    run(redis_url, scenario)


async def _equals(value: Awaitable[list[str]], expected: list[str]) -> bool:
    return await value == expected


def test_a_lost_connection_is_restored_and_listeners_read_again(redis_url: str) -> None:
    async def scenario(subscriber: Subscriber, client: aioredis.Redis) -> None:
        async with subscriber.listen("task") as listener:
            await client.client_kill_filter(_type="pubsub")
            assert await listener.wait(30)  # woken to read again (the loss, the resubscription)
            await eventually(lambda: _equals(subscribed(client), ["task"]))
            while await listener.wait(0.2):  # let the wake-ups of the reconnection pass
                pass
            await client.publish("task", "x")
            assert await listener.wait(30)

    run(redis_url, scenario)


def test_an_unreachable_redis_is_503_for_a_listener() -> None:
    async def scenario(subscriber: Subscriber, client: aioredis.Redis) -> None:
        with pytest.raises(BackendUnavailable):
            async with subscriber.listen("task"):
                pass
        assert subscriber.channels == 0

    run(f"redis://127.0.0.1:{free_port()}/0", scenario)


def test_a_key_gets_only_its_share_of_waits() -> None:
    slots = WaitSlots(per_key=2)
    with slots.hold("k"), slots.hold("k"), slots.hold("other"):
        with pytest.raises(TooManyWaits) as refused, slots.hold("k"):
            pass
        assert refused.value.status == 429 and "2" in refused.value.detail
    with slots.hold("k"):
        assert slots.held == {"k": 1}
    assert not slots.held


def test_a_full_redis_pool_is_a_quick_503_not_a_hang(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, result_backend=redis_url, storage_dir=tmp_path,  # type: ignore[call-arg]
                        redis_max_connections=1, redis_pool_timeout_s=0.1)  # type: ignore[arg-type]  # fmt: skip

    async def scenario() -> None:
        redis = redis_client(settings)
        held = await redis.connection_pool.get_connection()
        try:
            with pytest.raises(BackendUnavailable), backend_errors():
                await redis.ping()
        finally:
            await redis.connection_pool.release(held)
        assert await redis.ping()
        await redis.aclose()

    asyncio.run(scenario())
