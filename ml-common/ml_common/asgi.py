"""Pure ASGI middleware the API and the web client share: size limits and security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ml_common.schemas import ErrorOut

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

# uvicorn's httptools parser takes headers of any size, so both apps run the bounded h11 protocol
# below; past 16 KiB (h11's default bound) the apps answer 431 themselves.
MAX_HEADER_BYTES = 16 * 1024
# what uvicorn buffers of one request's head before it gives up on it: passed where uvicorn
# starts (`--http ml_common.asgi:BoundedH11Protocol --h11-max-incomplete-event-size 65536`)
MAX_BUFFERED_HEAD_BYTES = 64 * 1024


async def send_error(send: Send, status: int, code: str, detail: str) -> None:
    """Answer `status` with an ErrorOut body and close the connection.

    Without ``Connection: close`` uvicorn would read (and drop) the rest of a refused body to
    keep the connection.
    """
    body = ErrorOut(code=code, detail=detail).model_dump_json().encode()
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passes the limit."""


class BodySizeLimit:
    """Answer 413 to a body over `max_bytes`, by its Content-Length or while it streams.

    Once the body is too large, whatever the app answers instead (a form parser turns the
    error into its own 400) is replaced by the 413, unless the app had already started a
    response.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, by_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.by_path = dict(by_path or {})  # another limit for the paths under a prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = next(
            (n for prefix, n in self.by_path.items() if scope["path"].startswith(prefix)),
            self.default_max_bytes,
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await self._refuse(send, max_bytes)
                return
        seen = 0
        too_large = started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, refused
            if too_large and not started:  # the app answers our error its own way: 413 instead
                if not refused:
                    refused = True
                    await self._refuse(send, max_bytes)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started and not refused:
                await self._refuse(send, max_bytes)

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        detail = f"the upload exceeds the limit of {max_bytes} bytes"
        await send_error(send, 413, "payload_too_large", detail)


class HeaderSizeLimit:
    """Refuse requests whose headers add up to more than `max_bytes` with 431."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            if size > self.max_bytes:
                detail = f"the request headers exceed {self.max_bytes} bytes"
                await send_error(send, 431, "headers_too_large", detail)
                return
        await self.app(scope, receive, send)


# what every response of the API and the web client carries; each app adds its own
# content-security-policy and referrer-policy (and the client HSTS) in its middleware.py
BASE_SECURITY_HEADERS: Headers = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


class SecurityHeaders:
    """Add `headers` to every HTTP response that has not set them itself; a path under a key of
    `by_prefix` gets its own."""

    def __init__(
        self, app: ASGIApp, headers: Headers, by_prefix: Mapping[str, Headers] | None = None
    ) -> None:
        self.app = app
        self.headers = list(headers)
        self.by_prefix = {prefix: list(h) for prefix, h in (by_prefix or {}).items()}

    def _headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        for prefix, headers in self.by_prefix.items():
            if path.startswith(prefix):
                return headers
        return self.headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers_for(scope.get("path", ""))

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}  # a route's own header wins
                message["headers"] = [*headers, *(h for h in extra if h[0] not in own)]
            await send(message)

        await self.app(scope, receive, add_headers)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, whose buffer of an unfinished request head is bounded by
    `--h11-max-incomplete-event-size`: a head past it gets a JSON 431 (uvicorn's own answer is a
    plain 400) and the connection closes, without reading the rest of it."""

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        bound = self.config.h11_max_incomplete_event_size or MAX_BUFFERED_HEAD_BYTES
        if self.conn.their_state is not h11.ERROR or len(buffered) <= bound:
            super().send_400_response(msg)
            return
        detail = f"the request head exceeds {bound} bytes"
        body = ErrorOut(code="headers_too_large", detail=detail).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(
                status_code=431, headers=headers, reason=b"Request Header Fields Too Large"
            ),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
