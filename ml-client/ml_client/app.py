"""The web client factory; serve with ``uvicorn ml_client.app:create_app --factory``."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from redis import asyncio as aioredis
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from ml_client import batches, pages, routes
from ml_client.auth import LoginLimiter, SessionRegistry
from ml_client.errors import install_error_handlers
from ml_client.history import Originals, TaskHistory
from ml_client.middleware import security_headers
from ml_client.settings import ClientSettings, get_client_settings
from ml_client.users import UserStore, bootstrap_users
from ml_common.asgi import BodySizeLimit, HeaderSizeLimit
from ml_common.logs import configure_logging

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
MULTIPART_SLACK = 64 * 1024  # static/js/batch.js packs a request up to max_upload_bytes
API_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def _api_client(
    settings: ClientSettings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    headers = {"User-Agent": "mlprod-web-client"}
    if settings.client_api_key is None:
        logger.warning("ML_CLIENT_API_KEY is not set: the API will refuse the web client")
    else:
        headers["Authorization"] = f"Bearer {settings.client_api_key.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=str(settings.client_api_url),
        headers=headers,
        timeout=API_TIMEOUT,
        transport=transport,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ClientSettings = app.state.settings
    configure_logging(settings.log_level)
    await run_in_threadpool(bootstrap_users, settings)
    app.state.users = UserStore(settings)
    removed = await run_in_threadpool(app.state.originals.purge)
    if removed:
        logger.info("removed %d expired uploaded images", removed)
    redis = aioredis.Redis.from_url(
        str(settings.result_backend), socket_timeout=5, socket_connect_timeout=2
    )
    app.state.history = TaskHistory(redis, settings.result_expires_s, settings.client_history_max)
    app.state.sessions = SessionRegistry(redis, settings.client_session_max_age_s)
    app.state.limiter = LoginLimiter(
        redis, settings.client_login_max_failures, settings.client_login_window_s
    )
    async with _api_client(settings, app.state.api_transport) as http:
        app.state.api_http = http
        try:
            yield
        finally:
            await redis.aclose()


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    static = HERE / "static"
    versions = {
        p.relative_to(static).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in static.rglob("*")
        if p.is_file()
    }

    def static_url(name: str) -> str:
        """A cache-busting URL: the version changes with the file's content."""
        return f"/static/{name}?v={versions.get(name, '0')}"

    env.globals["static_url"] = static_url
    return Jinja2Templates(env=env)


class Static(StaticFiles):
    """Static files that the browser revalidates (by ETag) before each use: the modules that
    the versioned main.js imports carry no version of their own."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


class WebClient(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so that 500s carry the headers too.
        https: bool = self.state.settings.client_cookie_secure
        return security_headers(super().build_middleware_stack(), https)


def create_app(
    settings: ClientSettings | None = None, api_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the web client; `api_transport` lets tests route its API calls to an ASGI app."""
    settings = settings or get_client_settings()
    app = WebClient(
        title="mlprod web client",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect would be built from the request's Host
    )
    app.state.settings = settings
    app.state.api_transport = api_transport
    app.state.templates = _templates()
    app.state.originals = Originals(settings.storage_dir / "web-client", settings.result_expires_s)
    install_error_handlers(app)
    app.include_router(pages.router)
    app.include_router(routes.router)
    app.include_router(batches.router)
    app.mount("/static", Static(directory=HERE / "static"), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie="__Host-mlprod" if settings.client_cookie_secure else "mlprod_session",
        max_age=settings.client_session_max_age_s,
        same_site="lax",
        https_only=settings.client_cookie_secure,
    )
    app.add_middleware(HeaderSizeLimit)
    return app
