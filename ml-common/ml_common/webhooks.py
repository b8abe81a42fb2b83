"""Webhooks: the callback URL check, the signed event (Standard Webhooks), and each task's
delivery record and attempts in Redis (keys built in `ml_common.records`).

A task uploaded with a `callback_url` gets one delivery when it ends: one `webhook-id` for
every attempt, so that receivers can drop repeats; the worker sends it (ml_celery.webhooks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import redis
from redis import asyncio as aioredis
from standardwebhooks import Webhook

from ml_common.errors import InvalidCallbackUrl, backend_errors
from ml_common.records import deliveries_key, webhook_key

MAX_CALLBACK_URL = 2048


def _callback_url_pattern() -> str:
    """The one definition of a callback URL, as a regular expression: the API's check and the
    OpenAPI document (`pattern`) both use it, so that a client or fuzzer generating from the
    document and the server agree. http(s), a host name, IPv4 or bracketed IPv6 address, no
    credentials, an optional port up to 65535, then printable ASCII without spaces."""
    h16 = "[0-9A-Fa-f]{1,4}"
    octet = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    ls32 = rf"(?:{h16}:{h16}|{octet}(?:\.{octet}){{3}})"
    ipv6 = "|".join(  # RFC 3986's IPv6address, form by form
        [rf"(?:{h16}:){{6}}{ls32}", rf"::(?:{h16}:){{5}}{ls32}"]
        + [rf"(?:(?:{h16}:){{0,{n - 1}}}{h16})?::(?:{h16}:){{{5 - n}}}{ls32}" for n in range(1, 5)]
        + [rf"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}", rf"(?:(?:{h16}:){{0,5}}{h16})?::{h16}"]
        + [rf"(?:(?:{h16}:){{0,6}}{h16})?::"]
    )
    port = (  # 0 to 65535, leading zeros allowed (as urlsplit reads it)
        "0*(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
    )
    return rf"^https?://(?:[A-Za-z0-9.-]+|\[(?:{ipv6})\])(?::{port})?(?:[/?#][!-~]*)?$"


CALLBACK_URL_PATTERN = _callback_url_pattern()
_CALLBACK_URL = re.compile(CALLBACK_URL_PATTERN)
EVENT_SUCCEEDED = "detection.succeeded"
EVENT_FAILED = "detection.failed"
EVENT_CANCELLED = "detection.cancelled"
MAX_ATTEMPTS_KEPT = 100


def check_callback_url(url: str) -> str:
    """`url` if it may be a callback: http(s), a host, no credentials, at most 2048 chars.

    Where it points (a private address?) is checked when it is called, on the address it
    resolves to then."""
    if len(url) > MAX_CALLBACK_URL:
        raise InvalidCallbackUrl(f"callback_url is longer than {MAX_CALLBACK_URL} characters")
    if not _CALLBACK_URL.fullmatch(url):
        raise InvalidCallbackUrl(
            "callback_url must be an http or https URL with a host, no credentials, no spaces"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number raises here
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback_url is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidCallbackUrl("callback_url must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackUrl("callback_url must not carry credentials")
    if not parts.hostname or any(c.isspace() for c in url):
        raise InvalidCallbackUrl("callback_url has no host, or has spaces")
    return url


def signing_secret(secret_key: str, owner: str) -> str:
    """The owner's webhook secret (`whsec_…`): derived from the deployment's secret key, so
    nothing is stored; `GET /api/v1/webhooks/secret` tells it to its key."""
    digest = hmac.new(secret_key.encode(), f"mlprod-webhook:{owner}".encode(), hashlib.sha256)
    return "whsec_" + base64.b64encode(digest.digest()).decode()


def signed_headers(secret: str, webhook_id: str, body: str, now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    signature = Webhook(secret).sign(webhook_id, now, body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "mlprod-webhooks/1",
    }


def event_body(event: str, task_id: str, data: Mapping[str, Any]) -> str:
    return json.dumps(
        {
            "type": event,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "data": {"task_id": task_id, **data},
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Delivery:
    """A task's webhook: where, what, and its state (pending, delivered, failed)."""

    webhook_id: str
    url: str
    event: str
    body: str
    owner: str
    state: str = "pending"

    @classmethod
    def new(cls, url: str, event: str, body: str, owner: str) -> Delivery:
        return cls(f"msg_{uuid.uuid4().hex}", url, event, body, owner)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Delivery | None:
        try:
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except KeyError:
            return None


@dataclass(frozen=True)
class Attempt:
    number: int
    at: str
    status_code: int | None
    error: str
    duration_ms: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class DeliveryStore:
    """The worker's (blocking) store of deliveries and their attempts."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def create(self, task_id: str, delivery: Delivery) -> None:
        key = webhook_key(task_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={k: str(v) for k, v in asdict(delivery).items()})
            pipe.expire(key, self.ttl_s)
            pipe.execute()

    def get(self, task_id: str) -> Delivery | None:
        return Delivery.from_hash(self.redis.hgetall(webhook_key(task_id)))  # type: ignore[arg-type]

    def attempts(self, task_id: str) -> int:
        return int(self.redis.llen(deliveries_key(task_id)))

    def record(self, task_id: str, attempt: Attempt, state: str) -> None:
        key = deliveries_key(task_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, attempt.to_json())
            pipe.ltrim(key, -MAX_ATTEMPTS_KEPT, -1)
            pipe.expire(key, self.ttl_s)
            pipe.hset(webhook_key(task_id), "state", state)
            pipe.execute()


async def read_deliveries(
    client: aioredis.Redis, task_id: str
) -> tuple[Delivery | None, list[Attempt]]:
    """The API's read of a task's delivery and its attempts (oldest first)."""
    with backend_errors():
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(webhook_key(task_id))
            pipe.lrange(deliveries_key(task_id), 0, -1)
            fields, raw = await pipe.execute()
    attempts = [Attempt(**json.loads(item)) for item in raw]
    return Delivery.from_hash(fields), attempts
