"""The API's settings for the shared ASGI middleware: the security headers of a JSON API."""

from __future__ import annotations

from ml_api.routes.docs import DOCS_URL
from ml_common.asgi import BASE_SECURITY_HEADERS, ASGIApp, SecurityHeaders

CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)
COMMON_HEADERS = [*BASE_SECURITY_HEADERS, (b"referrer-policy", b"no-referrer")]


def security_headers(app: ASGIApp) -> SecurityHeaders:
    """Every response gets the headers; the docs page may run its own scripts and styles."""
    return SecurityHeaders(
        app,
        [*COMMON_HEADERS, (b"content-security-policy", CSP)],
        {DOCS_URL: [*COMMON_HEADERS, (b"content-security-policy", DOCS_CSP)]},
    )
