"""Depth and age of the oldest message of each task queue, read from the broker itself.

RabbitMQ: a passive queue_declare gives the depth; the oldest ready message is peeked
(basic_get, then rejected with requeue, which RabbitMQ puts back at its place) and its age is
read from the detect payload's `created_at`. Redis/Valkey (kombu keeps a queue as one list per
priority step, pushed on the left and popped on the right): LLEN of each list, and LINDEX -1
reads the oldest without taking it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from kombu import Connection, Queue

logger = logging.getLogger(__name__)

# kombu's Redis transport: one list per priority step, named queue + SEP + step (step 0: queue)
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    depth: int
    oldest_age_s: float  # 0 when the queue is empty or the age cannot be read


def created_at_of(body: Any) -> float | None:
    """The enqueue time (epoch seconds) of a Celery protocol-2 detect message body:
    ``[args, kwargs, embed]`` with kwargs["created_at"]; None for anything else."""
    try:
        if isinstance(body, bytes | str):
            body = json.loads(body)
        return datetime.fromisoformat(body[1]["created_at"]).timestamp()
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _kombu_body(raw: bytes | str) -> Any:
    """The decoded body of a message as kombu's Redis transport stores it."""
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return body


def _age(created: float | None, now: float) -> float:
    return max(0.0, now - created) if created is not None else 0.0


def redis_queue_stats(client: redis.Redis, queues: Iterable[str]) -> list[QueueStats]:
    now, stats = time.time(), []
    for queue in queues:
        keys = [queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}" for step in
                KOMBU_PRIORITY_STEPS]  # fmt: skip
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
                pipe.lindex(key, -1)
            raw = pipe.execute()
        depth = sum(int(n) for n in raw[::2])
        created = [created_at_of(_body_or_none(item)) for item in raw[1::2] if item]
        known = [c for c in created if c is not None]
        stats.append(QueueStats(queue, depth, _age(min(known) if known else None, now)))
    return stats


def _body_or_none(raw: bytes | str) -> Any:
    try:
        return _kombu_body(raw)
    except (ValueError, TypeError, KeyError):
        return None


def amqp_queue_stats(connection: Connection, queues: Sequence[str]) -> list[QueueStats]:
    now, stats = time.time(), []
    for name in queues:
        channel: Any = connection.channel()
        try:
            declared: Any = Queue(name, channel=channel).queue_declare(passive=True)
            depth = int(declared.message_count)
            created = _peek_created_at(Queue(name, channel=channel)) if depth else None
            stats.append(QueueStats(name, depth, _age(created, now)))
        except connection.channel_errors:  # not declared yet: no worker ever started
            stats.append(QueueStats(name, 0, 0.0))
        finally:
            channel.close()
    return stats


def _peek_created_at(queue: Queue) -> float | None:
    message = queue.get(no_ack=False, accept=["json"])
    if message is None:
        return None
    try:
        return created_at_of(message.body)
    finally:
        message.reject(requeue=True)


def queue_stats(broker_url: str, queues: Sequence[str], timeout_s: float) -> list[QueueStats]:
    """Depth and oldest age of each of `queues` on the broker at `broker_url`."""
    if broker_url.startswith(("redis", "rediss")):
        client = redis.Redis.from_url(
            broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        with client:
            return redis_queue_stats(client, queues)
    with Connection(broker_url, connect_timeout=timeout_s) as connection:
        connection.ensure_connection(max_retries=1, timeout=max(1, round(timeout_s)))
        return amqp_queue_stats(connection, queues)
