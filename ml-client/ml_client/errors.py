"""The web client's errors and the one place that turns them into responses.

Pages get a redirect to /login (when signed out) or an HTML error page; fetch/XHR callers and the
client's own /app/... endpoints get `ErrorOut` JSON with the matching status code.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ml_common import errors
from ml_common.schemas import ErrorOut

logger = logging.getLogger(__name__)


class LoginRequired(errors.MLProdError):
    code = "not_authenticated"
    status = 401


class CsrfFailed(errors.MLProdError):
    code = "csrf_failed"
    status = 403


class UpstreamError(errors.MLProdError):
    """The API answered with an error (or could not be reached); `status` is ours to send."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


TITLES = {
    403: "This request was refused",
    404: "Not found",
    429: "Too many requests",
    502: "The detection service refused the web client",
    503: "The detection service is unavailable",
}


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/app/") or (
        "application/json" in accept and "text/html" not in accept
    )


def _respond(request: Request, status: int, code: str, detail: str) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status in (429, 503):
        headers["Retry-After"] = "5"
    if wants_json(request):
        body = ErrorOut(code=code, detail=detail).model_dump()
        return JSONResponse(body, status_code=status, headers=headers)
    templates: Jinja2Templates = request.app.state.templates
    context = {"title": TITLES.get(status, "Something went wrong"), "detail": detail}
    return templates.TemplateResponse(request, "error.html", context, status, headers)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.MLProdError)
    if isinstance(exc, LoginRequired) and not wants_json(request):
        return RedirectResponse("/login", status_code=303)
    response = _respond(request, exc.status, exc.code, exc.detail)
    if isinstance(exc, errors.RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = errors.code_for_status(exc.status_code)
    return _respond(request, exc.status_code, code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors())
    detail = f"invalid or missing: {fields or 'input'}"
    return _respond(request, errors.ValidationFailed.status, errors.ValidationFailed.code, detail)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return _respond(request, 500, "internal_error", "an internal error occurred; it was logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.MLProdError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
