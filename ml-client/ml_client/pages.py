"""The HTML pages: sign in, the detection page, sign out; and the health probe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ml_client.auth import USER, check_csrf, csrf_token, sign_in, sign_out
from ml_client.deps import LimiterDep, SettingsDep, TemplatesDep, UserDep, UsersDep
from ml_client.errors import CsrfFailed
from ml_common.errors import (
    ExtremeAspectRatio,
    ImageTooLarge,
    InvalidImage,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMedia,
)
from ml_common.palette import palette_json
from ml_common.schemas import FINAL_STATES, Health

logger = logging.getLogger(__name__)
router = APIRouter(tags=["pages"])

NO_STORE = {"Cache-Control": "no-store"}
# The errors by which the API refuses a file before any detection runs: a batch records such an
# item failed with the error's code, and the page words it as it words a single upload's answer.
# What the page offers under the service's threshold: 0.05 is where COCO's AP is measured.
LOWER_SCORES = (0.05, 0.1, 0.2)
REFUSALS = (InvalidImage, UnsupportedMedia, PayloadTooLarge, ImageTooLarge, ExtremeAspectRatio)
FLASH = "flash"
FAVICON = Path(__file__).parent / "static" / "favicon.svg"


def _login_page(
    request: Request, templates: TemplatesDep, status: int = 200, error: str = "", name: str = ""
) -> HTMLResponse:
    context = {
        "csrf_token": csrf_token(request),
        "error": error,
        "username": name,
        "flash": request.session.pop(FLASH, ""),
    }
    return templates.TemplateResponse(request, "login.html", context, status, NO_STORE)


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers ask for /favicon.ico whatever the page links: the same icon as the pages'."""
    headers = {"Cache-Control": "public, max-age=86400"}
    return FileResponse(FAVICON, media_type="image/svg+xml", headers=headers)


@router.get("/", response_class=HTMLResponse)
async def index(
    request: Request, user: UserDep, templates: TemplatesDep, settings: SettingsDep
) -> HTMLResponse:
    context = {
        "user": user,
        "csrf_token": csrf_token(request),
        "max_upload_bytes": settings.max_upload_bytes,
        "shrink_max_side": settings.client_shrink_max_side,
        "api_public_url": settings.api_public_url,
        "palette": palette_json(),
        "final_states": [state.value for state in FINAL_STATES],
        "refusals": {error.code: error.status for error in REFUSALS},
        "score_threshold": settings.score_threshold,
        "lower_scores": [s for s in LOWER_SCORES if s < settings.score_threshold],
    }
    return templates.TemplateResponse(request, "index.html", context, headers=NO_STORE)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, templates: TemplatesDep) -> Response:
    if request.session.get(USER):
        return RedirectResponse("/", status_code=303)
    return _login_page(request, templates)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    templates: TemplatesDep,
    users: UsersDep,
    limiter: LimiterDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    try:
        await check_csrf(request)
    except CsrfFailed:
        error = "This sign-in form had expired. Please try again."
        return _login_page(request, templates, 403, error, username)
    if not username.strip() or not password:
        error = "Enter your user name and your password."
        return _login_page(request, templates, 422, error, username)
    address = request.client.host if request.client else "unknown"
    try:
        await limiter.attempt(username, address)  # counted before the password check
    except RateLimited as exc:
        response = _login_page(request, templates, 429, exc.detail.capitalize() + ".", username)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if not await run_in_threadpool(users.verify, username, password):
        logger.warning("failed sign-in for %r from %s", username[:64], address)
        return _login_page(request, templates, 401, "Wrong user name or password.", username)
    await limiter.succeeded(username, address)
    await sign_in(request, username, users.fingerprint(username) or "")
    logger.info("user %s signed in from %s", username, address)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    if request.session.get(USER):
        await check_csrf(request)
        await sign_out(request)
        request.session[FLASH] = "You have signed out."
    return RedirectResponse("/login", status_code=303)
