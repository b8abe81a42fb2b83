"""The API application factory; serve with ``uvicorn ml_api.app:create_app --factory``."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from PIL import Image
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp

from ml_api import annotate, metrics
from ml_api.decodegate import MIB, DecodeGate
from ml_api.errors import install_error_handlers
from ml_api.malloc import keep_large_buffers
from ml_api.metrics import RequestMetrics, operations_registry
from ml_api.middleware import security_headers
from ml_api.openapi import refine_document
from ml_api.queue import TaskQueue
from ml_api.ratelimit import RateLimiter
from ml_api.routes import batches, detections, health, models, webhooks
from ml_api.routes.docs import OPENAPI_URL, install_docs
from ml_api.subscriber import Subscriber, WaitSlots
from ml_common.apikeys import ApiKeyStore
from ml_common.asgi import BodySizeLimit, HeaderSizeLimit
from ml_common.errors import QueueUnavailable
from ml_common.images import ImageLimits, inspect_image
from ml_common.logs import configure_logging
from ml_common.settings import Settings, get_settings
from ml_common.storage import check_at_start, open_storage
from ml_common.tracing import TracingMiddleware, setup_tracing

logger = logging.getLogger(__name__)


def _sample(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


WARM_UP_IMAGES = tuple(_sample(fmt) for fmt in ("JPEG", "PNG"))
MULTIPART_SLACK = 64 * 1024


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level, json_lines=settings.json_logs)
    keep_large_buffers()  # an upload's buffers reuse the heap: no page faults per copy
    setup_tracing(settings, "mlprod-api")
    redis = redis_client(settings)
    queue = TaskQueue(settings)
    subscriber = Subscriber(str(settings.result_backend))
    app.state.redis = redis
    app.state.queue = queue
    app.state.limiter = RateLimiter(redis, settings.rate_limit_per_minute)
    app.state.subscriber = subscriber
    app.state.wait_slots = WaitSlots(settings.max_waits_per_key)
    app.state.decode_gate = DecodeGate(settings.decode_memory_mb * MIB)
    await run_in_threadpool(check_at_start, app.state.storage)
    await subscriber.start()
    await _warm_up(redis, queue)
    try:
        yield
    finally:
        await subscriber.stop()
        await redis.aclose()
        queue.close()


def redis_client(settings: Settings) -> aioredis.Redis:
    """The API's Redis pool: bounded, and a request that finds it full fails fast (503)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        str(settings.result_backend),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry_on_timeout=True,
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)


async def _warm_up(redis: aioredis.Redis, queue: TaskQueue) -> None:
    """Connect to Redis and the broker before the first request; either may still be down."""
    try:
        await redis.ping()
    except RedisError as exc:
        logger.warning("Redis not reachable yet: %s", exc)
    for sample in WARM_UP_IMAGES:  # load Pillow's decoders now, not on the first upload
        await run_in_threadpool(inspect_image, sample, ImageLimits(1_000_000, 1_000, 1.0))
    await run_in_threadpool(annotate.warm_up)  # the font and encoder of GET .../image
    try:
        await run_in_threadpool(queue.warm)
    except QueueUnavailable as exc:
        logger.warning("%s", exc.detail)


class DetectionAPI(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so that 500s carry the headers too.
        return security_headers(super().build_middleware_stack())

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            refine_document(super().openapi(), self.state.settings)
        return super().openapi()  # the refined document, kept by FastAPI


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = DetectionAPI(
        title="mlprod object detection API",
        version="1.0.0",
        docs_url=None,
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect would be built from the request's Host
        # operationId = the function's name: generated clients get `create_detection`
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.storage = open_storage(settings)
    app.state.api_keys = ApiKeyStore.from_settings(settings)
    install_error_handlers(app)
    app.include_router(health.router)
    install_docs(app)
    app.include_router(detections.router, prefix="/api/v1")
    app.include_router(batches.router, prefix="/api/v1")
    app.include_router(models.router, prefix="/api/v1")
    app.include_router(webhooks.router, prefix="/api/v1")
    app.include_router(metrics.router)
    app.state.metrics_registry = operations_registry(settings)
    app.add_middleware(RequestMetrics)
    if settings.tracing != "off":  # off, a span per request still cost its layer's CPU
        app.add_middleware(TracingMiddleware)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + MULTIPART_SLACK,
        by_path={"/api/v1/batches": settings.batch_max_bytes + MULTIPART_SLACK},
    )
    # Parse an upload in memory (the route reads it whole anyway): spooled past 1 MB to a
    # temporary file, a 3 MB photo cost 4 CPU-ms more (bench/api_cost.py). Process-wide.
    MultiPartParser.spool_max_size = max(
        MultiPartParser.spool_max_size, settings.max_upload_bytes + MULTIPART_SLACK
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(HeaderSizeLimit)
    return app
