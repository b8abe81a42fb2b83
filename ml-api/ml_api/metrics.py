"""Prometheus metrics of the API: requests, latency and upload bytes, and at each scrape the
queues (depth, oldest age, from the broker), ready worker processes per model and the stores.

The request metrics live in prometheus_client's default registry; the scrape-time collector is
registered in a registry of each app, so that tests may build many apps in one process.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator

import redis
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_api.deps import SettingsDep
from ml_api.queuestats import QueueStats, queue_stats
from ml_common.errors import NotAuthenticated
from ml_common.models import served_models, worker_queues
from ml_common.records import READY_PATTERN, ReadyModel
from ml_common.settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

REQUESTS = Counter("mlprod_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "mlprod_http_request_duration_seconds",
    "Time to answer an HTTP request (to its last byte)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UPLOAD_BYTES = Histogram(
    "mlprod_upload_bytes",
    "Request body bytes of uploads (POST)",
    ["route"],
    buckets=tuple(2**n for n in range(10, 32, 2)),
)
UNMATCHED = "unmatched"  # any path no route serves: one label value, whatever was asked


def route_template(scope: Scope) -> str:
    """The matched route's path with its parameters as names (/api/v1/detections/{task_id}),
    so that each task id does not make a time series of its own."""
    if scope.get("route") is None:
        return UNMATCHED
    path: str = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


class RequestMetrics:
    """ASGI middleware: count each HTTP request by its route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, received = time.perf_counter(), 500, 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, send_status)
        finally:
            route = route_template(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - start)
            if method == "POST" and received:
                UPLOAD_BYTES.labels(route).observe(received)


class OperationsCollector(Collector):
    """Read at each scrape: the broker's queues, the readiness beacons and the stores' health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = redis.Redis.from_url(
            str(settings.result_backend), socket_timeout=2, socket_connect_timeout=2
        )
        self._lock = threading.Lock()
        self._cached: tuple[float, list[QueueStats] | None] = (0.0, None)

    def collect(self) -> Iterator[Metric]:
        yield from self._queue_metrics()
        yield from self._store_metrics()

    def queues(self) -> list[QueueStats] | None:
        """The queues' stats, read at most once per `queue_stats_cache_s`; None: broker down."""
        with self._lock:
            taken, stats = self._cached
            if time.monotonic() - taken < self.settings.queue_stats_cache_s:
                return stats
            try:
                stats = queue_stats(
                    str(self.settings.broker_url),
                    worker_queues(self.settings),
                    self.settings.enqueue_timeout_s,
                )
            except Exception as exc:  # any broker failure is "broker down"
                logger.warning("queue stats unavailable: %s", exc)
                stats = None
            self._cached = (time.monotonic(), stats)
            return stats

    def _queue_metrics(self) -> Iterator[Metric]:
        stats = self.queues()
        up = GaugeMetricFamily("mlprod_broker_up", "1 when the broker answered the last scrape")
        up.add_metric([], 0 if stats is None else 1)
        yield up
        depth = GaugeMetricFamily("mlprod_queue_depth", "Messages waiting", labels=["queue"])
        age = GaugeMetricFamily(
            "mlprod_queue_oldest_age_seconds",
            "Age of the oldest waiting message (0: empty)",
            labels=["queue"],
        )
        for item in stats or []:
            depth.add_metric([item.queue], item.depth)
            age.add_metric([item.queue], item.oldest_age_s)
        yield depth
        yield age

    def _store_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mlprod_result_store_up", "1 when Redis answered the last scrape")
        ready = GaugeMetricFamily(
            "mlprod_ready_processes",
            "Worker processes with the model loaded and warm",
            labels=["model"],
        )
        try:
            counts = self._ready_counts()
        except redis.RedisError as exc:
            logger.warning("result store unavailable to metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for model in dict.fromkeys([*served_models(self.settings), *counts]):
            ready.add_metric([model], counts.get(model, 0))
        yield up
        yield ready

    def _ready_counts(self) -> Tally[str]:
        keys = list(self._redis.scan_iter(match=READY_PATTERN, count=100))
        values = self._redis.mget(keys) if keys else []
        models = [m for m in map(ReadyModel.from_json, values) if m is not None]
        return Tally(m.model for m in models)

    def close(self) -> None:
        self._redis.close()


def operations_registry(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector(settings))
    return registry


def _exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(REGISTRY) + generate_latest(registry)


def check_metrics_token(request: Request, settings: SettingsDep) -> None:
    """With ML_METRICS_TOKEN set, /metrics answers only a request that sends it as a bearer
    token (Prometheus: `authorization: {credentials_file: …}`)."""
    if settings.metrics_token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise NotAuthenticated("/metrics needs 'Authorization: Bearer <ML_METRICS_TOKEN>'")


@router.get("/metrics", dependencies=[Depends(check_metrics_token)])
async def metrics(request: Request) -> Response:
    """Prometheus text exposition; the proxy does not route it (scrape the API directly)."""
    body = await run_in_threadpool(_exposition, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
