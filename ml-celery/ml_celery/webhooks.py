"""Webhook delivery: when a detect task with a `callback_url` ends, POST its signed event,
retrying with exponential backoff and full jitter, one `webhook-id` on every attempt.

No server-side request forgery: the host is resolved once, every address it resolves to must
be public (or in ML_WEBHOOK_ALLOWED_NETWORKS), and the connection goes to that address (the
name is kept for the Host header and TLS), so a second DNS answer cannot point it elsewhere;
redirects are not followed; the response is read only up to a cap. Each attempt has one
deadline for all of it (ML_WEBHOOK_TIMEOUT_S: connect, send, every read), so a receiver that
trickles a byte at a time cannot hold it longer. Deliveries run on a queue and worker of their
own (ml_common.models.webhook_queue), never on a detection worker.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from ml_celery.celery_app import app
from ml_common.batchhooks import (
    FINISH_KEYS,
    FINISH_SCRIPT,
    START_SCRIPT,
    completed_delivery,
    finish_args,
    start_args,
)
from ml_common.contract import WEBHOOK_TASK
from ml_common.errors import UnsafeWebhookTarget
from ml_common.models import webhook_queue
from ml_common.records import batch_key
from ml_common.settings import Settings, get_settings
from ml_common.taskstore import RecordStore
from ml_common.webhooks import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_SUCCEEDED,
    Attempt,
    Delivery,
    DeliveryStore,
    event_body,
    signed_headers,
    signing_secret,
)

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# cloud metadata services, refused even where their range is otherwise public
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))


# IPv6 ranges whose last 32 bits are an IPv4 address that a router or translator may reach:
# IPv4-compatible (::/96), SIIT IPv4-translated (::ffff:0:0:0/96) and NAT64 (64:ff9b::/96)
EMBEDS_IPV4_LOW32 = tuple(
    ipaddress.ip_network(net) for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# refused whole: site-local (deprecated, still routed inside some sites), local-use NAT64
ALWAYS_FORBIDDEN_V6 = tuple(ipaddress.ip_network(net) for net in ("fec0::/10", "64:ff9b:1::/48"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address that `address` carries: mapped, compatible, translated, NAT64,
    6to4 (2002::/16) and both of Teredo's (2001::/32: server and client)."""
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in net for net in EMBEDS_IPV4_LOW32):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]


def is_forbidden(address: IPAddress) -> bool:
    """Loopback, private, link-local, metadata, multicast, reserved or unspecified, or an
    IPv6 address that is site-local or embeds an IPv4 address that is any of these."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in ALWAYS_FORBIDDEN_V6):
            return True
        if any(is_forbidden(v4) for v4 in embedded_ipv4(address)):
            return True
    return address in METADATA or not address.is_global or address.is_multicast


def resolve_target(host: str, port: int, allowed: Sequence[IPNetwork]) -> IPAddress:
    """The one address to connect to; UnsafeWebhookTarget if any answer is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if is_forbidden(address) and not any(address in net for net in allowed):
            raise UnsafeWebhookTarget(f"{host} resolves to {address}, which may not be called")
    return addresses[0]


def post(url: str, headers: dict[str, str], body: str, settings: Settings) -> int:
    """POST `body` to `url` through its checked address; the response status.

    TimeoutError once ML_WEBHOOK_TIMEOUT_S have passed since the call, whatever stage it is at.
    """
    deadline = time.monotonic() + settings.webhook_timeout_s
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_target(host, port, settings.webhook_allowed_networks)
    literal = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    request = httpx.Request(
        "POST",
        pinned,
        content=body.encode(),
        headers={**headers, "host": host_header},
        extensions={"sni_hostname": host},
    )
    left = max(deadline - time.monotonic(), 0.0)
    try:
        return asyncio.run(_send(request, settings.webhook_max_response_bytes, left))
    except asyncio.TimeoutError as exc:  # (not the builtin TimeoutError before Python 3.11)
        raise TimeoutError(f"no whole answer within {settings.webhook_timeout_s:g} s") from exc


async def _send(request: httpx.Request, max_bytes: int, seconds: float) -> int:
    """Send `request` and read its response (up to `max_bytes`), all within `seconds`."""

    async def exchange() -> int:
        timeout = httpx.Timeout(seconds)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as c:
            response = await c.send(request, stream=True)
            try:
                read = 0
                async for chunk in response.aiter_bytes():
                    read += len(chunk)
                    if read > max_bytes:
                        break  # the status is all that counts; the rest is not read
                return response.status_code
            finally:
                await response.aclose()

    return await asyncio.wait_for(exchange(), seconds)


def backoff_s(attempt: int, settings: Settings) -> float:
    """Full jitter: a random wait up to base * 2**(attempt-1), capped."""
    ceiling = min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


@functools.cache
def _store() -> DeliveryStore:
    settings = get_settings()
    return DeliveryStore(RecordStore.connect(settings).redis, settings.result_expires_s)


def attempt_once(task_id: str, settings: Settings) -> tuple[Attempt, bool] | None:
    """One attempt at the task's delivery: the attempt and whether it may be retried."""
    store = _store()
    delivery = store.get(task_id)
    if delivery is None:
        return None
    number = store.attempts(task_id) + 1
    now, started = datetime.now(timezone.utc), time.perf_counter()
    secret = signing_secret(settings.secret_key.get_secret_value(), delivery.owner)
    headers = signed_headers(secret, delivery.webhook_id, delivery.body, now)
    status, error, retry = None, "", True
    try:
        status = post(delivery.url, headers, delivery.body, settings)
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except UnsafeWebhookTarget as exc:
        error, retry = exc.detail, False
    except (httpx.HTTPError, OSError) as exc:  # TimeoutError (the whole-request deadline) too
        error = f"{type(exc).__name__}: {exc}"
    except SoftTimeLimitExceeded:  # the task's own limit: recorded and retried like the rest
        error = "SoftTimeLimitExceeded: the delivery task ran out of time"
    ms = round((time.perf_counter() - started) * 1000, 3)
    attempt = Attempt(number, now.isoformat(), status, error, ms)
    last = not error or not retry or number >= settings.webhook_max_attempts
    state = "delivered" if not error else ("failed" if last else "pending")
    store.record(task_id, attempt, state)
    return attempt, not last


@app.task(name=WEBHOOK_TASK, bind=True, max_retries=None, ignore_result=True, acks_late=True)
def deliver(self: Task[Any, Any], task_id: str) -> None:
    """One attempt; a failed one schedules the next after its backoff."""
    settings = get_settings()
    outcome = attempt_once(task_id, settings)
    if outcome is None:
        return
    attempt, again = outcome
    extra = {"task_id": task_id}
    if not attempt.error:
        logger.info("webhook of %s delivered (attempt %d)", task_id, attempt.number, extra=extra)
    elif again:
        delay = backoff_s(attempt.number, settings)
        logger.info("webhook of %s: %s; retry in %.1f s", task_id, attempt.error, delay,
                    extra=extra)  # fmt: skip
        raise self.retry(countdown=delay, queue=webhook_queue(settings))
    else:
        logger.warning("webhook of %s given up: %s", task_id, attempt.error, extra=extra)


def _event(state: str, retval: Any) -> tuple[str, dict[str, Any]] | None:
    if state == "SUCCESS":
        return EVENT_SUCCEEDED, {"status": "succeeded", "result": retval}
    if state == "FAILURE":
        return EVENT_FAILED, {"status": "failed", "error": f"{type(retval).__name__}: {retval}"}
    if state == "IGNORED":  # the detect task ignores itself only when it was cancelled
        return EVENT_CANCELLED, {"status": "cancelled"}
    return None  # RETRY: not ended yet


def start_delivery(
    task_id: str, url: str, state: str, retval: Any, headers: dict[str, str] | None = None
) -> None:
    """Store the task's event and queue its first attempt."""
    event = _event(state, retval)
    if event is None:
        return
    record = RecordStore.connect(get_settings()).get(task_id)
    owner = record.owner if record else ""
    body = event_body(event[0], task_id, event[1])
    _store().create(task_id, Delivery.new(url, event[0], body, owner))
    # the detect task's trace headers: each attempt's span joins the upload's trace
    deliver.apply_async((task_id,), queue=webhook_queue(get_settings()), headers=headers or {})


_ITEM_STATES = {"SUCCESS": "succeeded", "FAILURE": "failed", "IGNORED": "cancelled"}


def start_batch_item(batch_id: str, task_id: str) -> None:
    """Count a batch item as started (its batch's counts and event streams)."""
    store = _store()
    try:
        store.redis.eval(START_SCRIPT, 2, *start_args(batch_id, task_id, store.ttl_s))
    except redis.RedisError as exc:  # its end is still counted; never raised into the worker
        logger.error("start of %s not counted: %s", task_id, exc, extra={"task_id": task_id})


def finish_batch_item(batch_id: str, task_id: str, state: str) -> None:
    """Count a batch item's end; the one that completes a batch with a callback sends its
    `batch.completed` event (ml_common.batchhooks)."""
    final = _ITEM_STATES.get(state)
    store = _store()
    if final is None:
        return  # RETRY: not ended yet
    args = finish_args(batch_id, [task_id], final, store.ttl_s)
    if store.redis.eval(FINISH_SCRIPT, FINISH_KEYS, *args) != 1:
        return
    delivery = completed_delivery(batch_id, store.redis.hgetall(batch_key(batch_id)))
    if delivery is not None:
        store.create(batch_id, delivery)
        deliver.apply_async((batch_id,), queue=webhook_queue(get_settings()))
        logger.info("batch %s completed: webhook queued", batch_id)


def announce_end(
    task_id: str,
    callback_url: str | None,
    batch_id: str | None,
    state: str,
    retval: Any,
    headers: dict[str, str] | None = None,
) -> None:
    """A detect task's end, once Celery stored its result (a receiver that reads the task
    finds it final): its webhook to `callback_url`, and its count toward its batch's
    `batch.completed`. Redis failures are logged, never raised into the worker."""
    try:
        if callback_url:
            start_delivery(task_id, callback_url, state, retval, headers)
        if batch_id:
            finish_batch_item(batch_id, task_id, state)
    except redis.RedisError as exc:
        logger.error("webhook of %s not queued: %s", task_id, exc, extra={"task_id": task_id})
