"""The handlers that turn domain errors (each carries its HTTP status) into responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ml_common import errors
from ml_common.schemas import ErrorOut

logger = logging.getLogger(__name__)


def documented(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The `responses=` of a route: each status answers an ErrorOut."""
    return {status: {"model": ErrorOut} for status in statuses}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(code=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.MLProdError)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.status == 503:
        headers["Retry-After"] = "5"
        # the service could not do its part (a store or the broker failed or was too slow):
        # the operator's concern, unlike a client's error
        logger.warning(
            "%s %s answered 503 %s: %s", request.method, request.url.path, exc.code, exc.detail
        )
    return error_response(exc.status, exc.code, exc.detail, headers)


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query", "header")]
    where = ".".join(loc) or "request"
    if err.get("type") == "missing":
        return f"'{where}' is required"
    return f"'{where}': {err.get('msg')}"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = "; ".join(_describe(e) for e in exc.errors()) or "invalid request"
    return error_response(errors.ValidationFailed.status, errors.ValidationFailed.code, detail)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method some route takes on the request's path: Starlette's 405 names only the
    first route's, and a path such as /batches/{id} has one route per method."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = errors.code_for_status(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
    return error_response(exc.status_code, code, str(exc.detail), headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an internal error occurred; it was logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.MLProdError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
