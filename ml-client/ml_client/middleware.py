"""The web client's settings for the shared ASGI middleware: the security headers of its pages."""

from __future__ import annotations

from ml_common.asgi import BASE_SECURITY_HEADERS, ASGIApp, SecurityHeaders

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# An image opened in its own tab: the browser's image viewer styles itself inline.
IMAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    *BASE_SECURITY_HEADERS,
    (b"referrer-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


def security_headers(app: ASGIApp, https: bool) -> SecurityHeaders:
    """The client's headers on every response, HSTS only when it is served over HTTPS."""
    return SecurityHeaders(app, [*SECURITY_HEADERS, HSTS] if https else SECURITY_HEADERS)
