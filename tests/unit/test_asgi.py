"""The shared ASGI middleware, driven with plain ASGI messages (no framework in between)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml_common.asgi import (
    ASGIApp,
    BodySizeLimit,
    HeaderSizeLimit,
    Message,
    Receive,
    Scope,
    SecurityHeaders,
    Send,
)


def run(
    app: ASGIApp, chunks: Sequence[bytes] = (), headers: Sequence[tuple[bytes, bytes]] = ()
) -> list[Message]:
    """Send one HTTP request with `chunks` as its body; return what the app sent back."""
    scope: Scope = {"type": "http", "path": "/", "headers": list(headers)}
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or [b""])
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def reader(answer_on_error: int | None = None, answer_first: bool = False) -> ASGIApp:
    """An app that reads the whole body, then answers 200 with its length.

    With `answer_on_error`, it catches the error the body limit raises and answers that
    status itself, as a form parser does; with `answer_first` it starts its answer before
    it reads.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        size = 0
        try:
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except Exception:
            if answer_on_error is None:
                raise
            await send({"type": "http.response.start", "status": answer_on_error, "headers": []})
            await send({"type": "http.response.body", "body": b"form error"})
            return
        if not answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    return app


def status_and_body(sent: list[Message]) -> tuple[int, Any]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    ctype = dict(start[0]["headers"]).get(b"content-type")
    return start[0]["status"], json.loads(body) if ctype == b"application/json" else body


def test_a_body_within_the_limit_reaches_the_app() -> None:
    assert status_and_body(run(BodySizeLimit(reader(), 10), [b"12345", b"67890"])) == (200, b"10")


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    sent = run(BodySizeLimit(reader(), 10), [b"x"], [(b"content-length", b"11")])
    status, body = status_and_body(sent)
    assert (status, body["code"]) == (413, "payload_too_large")
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_streamed_body_over_the_limit_is_413_even_if_the_app_answers_its_own_error() -> None:
    for app in (reader(), reader(answer_on_error=400)):
        status, body = status_and_body(run(BodySizeLimit(app, 10), [b"123456", b"789012"]))
        assert (status, body["code"]) == (413, "payload_too_large")


def test_an_answer_already_started_is_not_answered_twice() -> None:
    sent = run(BodySizeLimit(reader(answer_first=True), 10), [b"123456", b"789012"])
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert sent[0]["status"] == 200


def test_headers_over_the_limit_are_431() -> None:
    app = HeaderSizeLimit(reader(), max_bytes=100)
    assert status_and_body(run(app, headers=[(b"x-small", b"1")]))[0] == 200
    status, body = status_and_body(run(app, headers=[(b"x-big", b"a" * 100)]))
    assert (status, body["code"]) == (431, "headers_too_large")


def test_security_headers_by_path_prefix() -> None:
    app = SecurityHeaders(reader(), [(b"x-a", b"1")], {"/docs": [(b"x-a", b"docs")]})
    for path, expected in (("/", b"1"), ("/docs/x", b"docs")):
        sent: list[Message] = []

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        asyncio.run(app({"type": "http", "path": path, "headers": []}, receive, send))
        assert dict(sent[0]["headers"])[b"x-a"] == expected


def test_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    for middleware in (BodySizeLimit(app, 1), SecurityHeaders(app, [])):
        asyncio.run(middleware({"type": "lifespan"}, receive, send))
    assert seen == ["lifespan", "lifespan"]


def test_an_unhandled_error_still_carries_the_security_headers(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ml_api.app import create_app as create_api
    from ml_client.app import create_app as create_client
    from ml_client.settings import ClientSettings

    settings = ClientSettings(_env_file=None, storage_dir=tmp_path)  # type: ignore[call-arg]

    def boom() -> None:
        raise RuntimeError("a bug")

    apps: list[FastAPI] = [create_api(settings), create_client(settings)]
    for app in apps:
        app.add_api_route("/boom", boom)
        response = TestClient(app, raise_server_exceptions=False).get("/boom")
        assert response.status_code == 500
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
