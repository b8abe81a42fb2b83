"""One Redis pub/sub connection per API process, shared by every request that waits on a task.

Each `?wait=` long-poll and `/events` stream once held a pub/sub connection of its own, so one
key holding enough of them emptied the connection pool for everyone. Now a request listens on
its channel through the `Subscriber`, which holds the only subscription connection (a pool of
one of its own), subscribes a channel while someone listens on it, and wakes its listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ml_common.errors import BackendUnavailable, TooManyWaits

logger = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 5.0  # how long a listener waits for Redis to confirm its subscription
RETRY_S = 1.0  # the pause before reconnecting after a failure
# A connection whose peer vanished without closing it (a Redis container killed or moved) reads
# nothing forever: after this long without a message the reader pings, and a second silence as
# long means the connection is dead, so it reconnects within about twice this.
PING_S = 2.0


class Listener:
    """One waiting request's view of its channel."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.message: str | None = None  # the last message's data; None after any other wake

    def wake(self, message: str | None = None) -> None:
        self.message = message if not self._event.is_set() else None  # two: read the store
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout_s: float) -> bool:
        """Whether woken (a message, a reconnect or a failure) before `timeout_s` ran out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        woken = self._event.is_set()
        self.clear()  # before the caller reads: a message from now on wakes it again
        return woken


@dataclass
class _Channel:
    listeners: set[Listener] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


class Subscriber:
    """Fans the messages of one pub/sub connection out to the listeners of each channel.

    A channel is subscribed while anyone listens on it. A listener is handed over only once
    Redis has confirmed the subscription, so that whatever it reads next cannot miss a later
    message; after a lost connection, the resubscription is confirmed again and wakes every
    listener to read anew. A failure wakes them too (they read, and report the outage). A quiet
    connection is pinged, so that one that silently died is noticed within seconds.
    """

    def __init__(self, redis_url: str, retry_s: float = RETRY_S) -> None:
        self.redis = aioredis.Redis.from_url(
            redis_url,
            max_connections=1,
            socket_connect_timeout=2,
            socket_timeout=5,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),  # the reader reconnects (and resubscribes) itself
            decode_responses=True,
        )
        self.retry_s = retry_s
        self._pubsub = self.redis.pubsub()
        self._channels: dict[str, _Channel] = {}
        self._lock = asyncio.Lock()  # one sender (subscribe, unsubscribe, reconnect) at a time
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._pinged = False  # a ping is out, unanswered

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="redis-subscriber")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()
        await self.redis.aclose()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Listener]:
        """Listen on `channel` (subscribed and confirmed on entry) until the block ends."""
        listener = Listener()
        entry = self._channels.get(channel)
        fresh = entry is None
        if entry is None:
            entry = self._channels[channel] = _Channel()
        entry.listeners.add(listener)  # before subscribing: the confirmation finds it
        try:
            if fresh:
                await self._send(channel, "subscribe")
            await _confirmation(entry)
            listener.clear()  # the caller reads next, which covers every message until now
            yield listener
        finally:
            entry.listeners.discard(listener)
            # an unconfirmed channel is left to the reader, which drops it once confirmed
            if not entry.listeners and entry.confirmed.is_set():
                await self._drop(channel, entry)

    @property
    def channels(self) -> int:
        return len(self._channels)

    async def _send(self, channel: str, command: str) -> None:
        try:
            async with self._lock:
                await getattr(self._pubsub, command)(channel)
        except RedisError as exc:
            if command == "subscribe":
                self._channels.pop(channel, None)  # its listeners time out; the next sends anew
            raise BackendUnavailable("the result store is unreachable; try again") from exc
        if command == "subscribe":
            self._connected.set()

    async def _drop(self, channel: str, entry: _Channel | None) -> None:
        if self._channels.get(channel) is not entry:
            return
        self._channels.pop(channel, None)
        with contextlib.suppress(BackendUnavailable):  # the connection's loss drops it anyway
            await self._send(channel, "unsubscribe")

    async def _read(self) -> None:
        await self._connected.wait()
        healthy = True
        while True:
            try:
                if not healthy:
                    await self._reconnect()
                message = await self._next()
            except (RedisError, OSError) as exc:
                if healthy:
                    logger.warning("Redis subscription lost, reconnecting: %s", exc)
                healthy = False
                self._pinged = False
                self._wake_all()
                await asyncio.sleep(self.retry_s)
                continue
            if not healthy:
                logger.info("Redis subscription restored")
                healthy = True
            if message is not None and message["type"] != "pong":
                await self._dispatch(message)

    async def _next(self) -> dict[str, Any] | None:
        """The next message, or None after a silence (then pings; two mean a dead connection)."""
        message: dict[str, Any] | None = await self._pubsub.get_message(timeout=PING_S)
        if message is not None:
            self._pinged = False
            return message
        if self._pinged:
            connection = self._pubsub.connection
            if connection is not None:
                await connection.disconnect()
            raise RedisConnectionError(f"no answer from Redis to a ping in {PING_S} s")
        async with self._lock:
            await self._pubsub.ping()
        self._pinged = True
        return None

    async def _reconnect(self) -> None:
        async with self._lock:
            connection = self._pubsub.connection
            if connection is not None and not connection.is_connected:
                await connection.connect()  # the pub/sub resubscribes its channels on connect

    async def _dispatch(self, message: dict[str, Any]) -> None:
        channel = str(message["channel"])
        entry = self._channels.get(channel)
        if message["type"] == "subscribe":
            if entry is not None:
                entry.confirmed.set()
            if entry is None or not entry.listeners:  # (re)subscribed, and nobody listens
                await self._drop(channel, entry)
        if entry is not None and message["type"] in ("message", "subscribe"):
            data = message["data"] if message["type"] == "message" else None
            for listener in entry.listeners:
                listener.wake(data)

    def _wake_all(self) -> None:
        for entry in self._channels.values():
            for listener in entry.listeners:
                listener.wake()


async def _confirmation(entry: _Channel) -> None:
    try:
        async with asyncio.timeout(CONFIRM_TIMEOUT_S):
            await entry.confirmed.wait()
    except TimeoutError:
        raise BackendUnavailable("the result store did not confirm a subscription") from None


class WaitSlots:
    """How many long-polls and event streams each API key holds open in this process."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.held: Counter[str] = Counter()

    def free(self, key_id: str) -> bool:
        """Whether `key_id` has a place left."""
        return self.held[key_id] < self.per_key

    @contextlib.contextmanager
    def hold(self, key_id: str) -> Iterator[None]:
        """Take one of `key_id`'s places for the block; raise TooManyWaits when none is left."""
        if not self.free(key_id):
            raise TooManyWaits(
                f"this API key already holds {self.per_key} open waits and event streams "
                "(ML_MAX_WAITS_PER_KEY); close one, or poll without ?wait="
            )
        self.held[key_id] += 1
        try:
            yield
        finally:
            self.held[key_id] -= 1
            if not self.held[key_id]:
                del self.held[key_id]
