"""API security checks: CORS, security headers on every answer, request size limits on a real
uvicorn, no request-chosen paths, and no secret in any log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from ml_api import deps
from ml_api.app import create_app
from ml_common.apikeys import ApiKeyStore
from ml_common.records import TaskRecord, record_key
from ml_common.settings import Settings
from ml_common.storage import open_storage
from tests.conftest import LiveStack, encode, launch_stack, need_redis, photo
from tests.integration.test_api_input import BROKER_DB, RESULTS_DB, input_settings

pytestmark = pytest.mark.integration
# one backend is enough for what the HTTP server does; the pipeline tests cover both
ONE_STACK = pytest.mark.parametrize("live_stack", ["valkey"], indirect=True)
FOREIGN = "https://evil.example"
TASK = "/api/v1/detections/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f"
PART_HEAD = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'


@pytest.fixture
def security_settings(tmp_path: Path) -> Iterator[Settings]:
    need_redis()
    yield input_settings(tmp_path, secret_key="s3cret-value-that-must-not-leak")
    for url in (RESULTS_DB, BROKER_DB):
        redis.Redis.from_url(url).flushdb()


def client_and_key(settings: Settings) -> tuple[TestClient, dict[str, str]]:
    plain, _ = ApiKeyStore.from_settings(settings).create(f"k{time.monotonic_ns()}")
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    return client, {"Authorization": f"Bearer {plain}"}


def test_cors_is_closed_by_default(security_settings: Settings) -> None:
    client, headers = client_and_key(security_settings)
    with client:
        r = client.get(TASK, headers={**headers, "Origin": FOREIGN})
        assert "access-control-allow-origin" not in r.headers
        preflight = client.options(
            "/api/v1/detections",
            headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 405
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(security_settings: Settings) -> None:
    allowed = "https://app.example"
    settings = security_settings.model_copy(update={"cors_origins": [allowed]})
    client, headers = client_and_key(settings)
    with client:
        ok = client.get(TASK, headers={**headers, "Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed
        assert (
            "access-control-allow-origin"
            not in client.get(TASK, headers={**headers, "Origin": FOREIGN}).headers
        )
        preflight = client.options(
            "/api/v1/detections",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        refused = client.options(
            "/api/v1/detections",
            headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


def test_every_answer_carries_the_security_headers(security_settings: Settings) -> None:
    settings = security_settings.model_copy(update={"rate_limit_per_minute": 1})
    client, headers = client_and_key(settings)
    image = encode(photo("coffee").resize((60, 40)))

    def boom() -> None:
        raise RuntimeError("an unexpected bug")

    with client:
        answers = {
            "200": client.get("/healthz"),
            "202": client.post("/api/v1/detections", files={"file": ("x.jpg", image)},
                               headers=headers),
            "429": client.post("/api/v1/detections", files={"file": ("x.jpg", image)},
                               headers=headers),
            "401": client.get(TASK),
            "404": client.get(TASK, headers=headers),
            "405": client.put(TASK, headers=headers),
            "413": client.post("/api/v1/detections", headers=headers,
                               content=b"x" * (settings.max_upload_bytes + 70_000)),
            "422": client.get("/api/v1/detections/nope", headers=headers),
            "431": client.get("/healthz", headers={"X-Junk": "j" * 20_000}),
        }  # fmt: skip
        client.app.dependency_overrides[deps.get_results] = boom  # type: ignore[attr-defined]
        answers["500"] = client.get(TASK, headers=headers)
    for status, r in answers.items():
        assert str(r.status_code) == status, (status, r.text)
        assert r.headers["x-content-type-options"] == "nosniff", status
        assert r.headers["x-frame-options"] == "DENY", status
        assert r.headers["content-security-policy"].startswith("default-src 'none'"), status
        assert r.headers["referrer-policy"] == "no-referrer", status
        assert "Traceback" not in r.text and "unexpected bug" not in r.text, status
    assert answers["500"].json()["code"] == "internal_error"
    assert answers["431"].json()["code"] == "headers_too_large"


# The raw-body upload's name (kept as the record's name, never reaching the disk: see
# test_file_names_never_reach_the_disk), model (one of the served) and callback URL (checked)
# come in the query; `Prefer: wait=N` is read as a number of seconds.
RAW_UPLOAD_FIELDS = {
    ("query", "filename"), ("query", "model"), ("query", "callback_url"), ("header", "Prefer"),
}  # fmt: skip


def test_no_endpoint_takes_a_path_from_the_request(security_settings: Settings) -> None:
    with TestClient(create_app(security_settings)) as client:
        spec = client.get("/api/openapi.json").json()
    seen_path_params = set()
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                schema = param["schema"]
                if param["in"] == "path":
                    seen_path_params.add(param["name"])
                    assert param["name"] in ("task_id", "batch_id"), path
                    assert (schema["type"], schema["format"]) == ("string", "uuid"), path
                elif (param["in"], param["name"]) in {("query", "format")}:
                    assert "$ref" in schema or "enum" in schema, path  # a choice, never a name
                elif (param["in"], param["name"]) == ("header", "Idempotency-Key"):
                    assert schema["maxLength"] <= 255, path  # hashed, never a path
                elif (param["in"], param["name"]) in RAW_UPLOAD_FIELDS:
                    assert path == "/api/v1/detections", path  # what a raw body's form holds
                elif (param["in"], param["name"]) == ("query", "original_size"):
                    assert schema["type"] == "string", path  # WIDTHxHEIGHT, parsed as numbers
                else:
                    numbers = {"wait", "timeout", "offset", "limit", "min_score"}
                    assert param["in"] == "query" and param["name"] in numbers, path
                    assert schema["type"] in ("number", "integer")
            body = operation.get("requestBody")
            if body is not None:
                media, *raw = body["content"]
                assert media == "multipart/form-data"
                for kind in raw:  # the raw-body upload: bytes checked by content, no name
                    assert body["content"][kind]["schema"]["format"] == "binary", path
                    assert kind.startswith("image/") or kind == "application/octet-stream"
    assert seen_path_params == {"task_id", "batch_id"}


def test_secrets_never_reach_the_logs(
    security_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, headers = client_and_key(security_settings)
    key = headers["Authorization"].removeprefix("Bearer ")
    with client:
        client.post("/api/v1/detections", files={"file": ("x.jpg", encode(photo("coffee")))},
                    headers=headers)  # fmt: skip
        client.post("/api/v1/detections", files={"file": ("x.jpg", b"junk")}, headers=headers)
        client.get(TASK, headers={"Authorization": f"Bearer {key}x"})  # a wrong key
        client.get(TASK, headers=headers)
    assert "queued" in caplog.text  # the upload was logged, and that is all
    for secret in (key, security_settings.secret_key.get_secret_value()):
        assert secret not in caplog.text
    assert security_settings.secret_key.get_secret_value() not in repr(security_settings)


# -- a real uvicorn (the live stack) ----------------------------------------------------------


def upload_files(live: LiveStack) -> set[str]:
    return {key for key, _ in open_storage(live.settings).uploads()}


@ONE_STACK
def test_an_oversized_stream_is_refused_before_it_is_read(live_stack: LiveStack) -> None:
    """Oversized chunked upload, no Content-Length: 413 while it streams, the rest unread."""
    before = upload_files(live_stack)
    chunk, chunks = b"\xff" * 65_536, 1024  # 64 MiB offered, the limit is 10 MiB
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield PART_HEAD
        for _ in range(chunks):
            sent += len(chunk)
            yield chunk
        yield b"\r\n--b0undary--\r\n"

    r = httpx.post(
        f"{live_stack.api_url}/api/v1/detections",
        content=body(),
        headers={**live_stack.headers(), "Content-Type": "multipart/form-data; boundary=b0undary"},
        timeout=60,
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    assert r.headers["connection"] == "close"
    assert sent < len(chunk) * chunks / 2, f"the server read {sent} bytes"
    assert upload_files(live_stack) == before
    assert httpx.get(f"{live_stack.api_url}/healthz").status_code == 200


@ONE_STACK
def test_a_small_chunked_upload_is_accepted(live_stack: LiveStack) -> None:
    image = encode(Image.new("RGB", (64, 48), (200, 30, 30)))

    def body() -> Iterator[bytes]:
        yield PART_HEAD
        yield from (image[i : i + 100] for i in range(0, len(image), 100))
        yield b"\r\n--b0undary--\r\n"

    r = httpx.post(
        f"{live_stack.api_url}/api/v1/detections",
        content=body(),
        headers={**live_stack.headers(), "Content-Type": "multipart/form-data; boundary=b0undary"},
        timeout=30,
    )
    assert r.status_code == 202, r.text


@ONE_STACK
@pytest.mark.parametrize("name", ["X-Junk", "Authorization", "Cookie"])
def test_huge_headers_are_4xx_and_the_server_keeps_serving(
    live_stack: LiveStack, name: str
) -> None:
    huge = "a" * 65_536
    for path in ("/healthz", "/api/v1/detections"):
        r = httpx.get(f"{live_stack.api_url}{path}", headers={name: huge}, timeout=10)
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["code"] == "headers_too_large"
    many = [(f"X-H{i}", "v" * 10) for i in range(2000)]
    r = httpx.get(f"{live_stack.api_url}/healthz", headers=many, timeout=10)
    assert r.status_code == 431
    assert httpx.get(f"{live_stack.api_url}/healthz").status_code == 200


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def send_endless_header(port: int, size: int) -> bytes:
    """Send a request head with one header of `size` bytes (while the server reads): the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ")
        chunk, sent = b"a" * 65_536, 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        with contextlib.suppress(ConnectionResetError):
            return sock.recv(4096)
    return b""


@ONE_STACK
def test_a_64_mb_header_gets_431_without_the_api_buffering_it(live_stack: LiveStack) -> None:
    """A 64 MB header: 431 once 64 KiB are buffered; the API never holds the header"""
    pid = live_stack.stack.procs["api"].pid
    before = rss_bytes(pid)
    answers = [send_endless_header(live_stack.stack.api_port, 64 * 1024 * 1024) for _ in range(2)]
    grown = rss_bytes(pid) - before
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"code":"headers_too_large"' in answer
    assert grown < 16 * 1024 * 1024, f"the API grew by {grown} bytes"
    assert httpx.get(f"{live_stack.api_url}/healthz").status_code == 200


@ONE_STACK
def test_no_secret_in_the_live_logs(live_stack: LiveStack, astronaut_jpeg: bytes) -> None:
    headers = live_stack.headers()
    r = httpx.post(f"{live_stack.api_url}/api/v1/detections", headers=headers, timeout=30,
                   files={"file": ("a.jpg", astronaut_jpeg, "image/jpeg")})  # fmt: skip
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    status = httpx.get(f"{live_stack.api_url}/api/v1/detections/{task_id}", params={"wait": 60},
                       headers=headers, timeout=70).json()  # fmt: skip
    assert status["status"] == "succeeded"
    httpx.get(f"{live_stack.api_url}{TASK}", headers={"Authorization": "Bearer mlp_wrong"})
    logs = "".join(p.read_text(errors="replace") for p in live_stack.stack.log_dir.glob("*.log"))
    assert task_id in logs  # the logs are there, and they name the task
    assert live_stack.api_key not in logs
    assert live_stack.api_key.removeprefix("mlp_") not in logs
    assert live_stack.settings.secret_key.get_secret_value() not in logs


@ONE_STACK
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_request_host(
    live_stack: LiveStack,
) -> None:
    """A trailing slash with a forged Host: a JSON 404, never a redirect to that host"""
    evil = {**live_stack.headers(), "Host": "evil.example"}
    for path in (f"{TASK}/", "/healthz/", "/api/v1/detections/"):
        r = httpx.get(f"{live_stack.api_url}{path}", headers=evil, timeout=10)
        assert r.status_code == 404, (path, r.status_code, r.headers.get("location"))
        assert "location" not in r.headers
        assert r.json()["code"] in ("not_found", "task_not_found"), r.text


# -- long-polls and event streams: one key cannot exhaust the API's Redis connections ---------


def unfinished_task(live: LiveStack, key: str) -> str:
    """A task of `key` that stays queued: its record exists, nothing is ever queued for it."""
    owner = ApiKeyStore.from_settings(live.settings).check(key)
    assert owner is not None
    task_id = str(uuid.uuid4())
    record = TaskRecord.new(task_id, owner.key_id, "upload/never.jpg")
    redis.Redis.from_url(str(live.settings.result_backend)).hset(
        record_key(task_id), mapping=record.to_hash()
    )
    return task_id


async def open_streams(
    client: httpx.AsyncClient, task_id: str, headers: dict[str, str], count: int
) -> tuple[list[int], contextlib.AsyncExitStack]:
    """Open `count` event streams on `task_id`; each 200 one has read its first event and stays
    open until the returned stack closes."""
    streams = contextlib.AsyncExitStack()

    async def one() -> int:
        r = await streams.enter_async_context(
            client.stream("GET", f"/api/v1/detections/{task_id}/events", headers=headers)
        )
        if r.status_code == 200:  # (a dropped line iterator would close the stream)
            lines = await streams.enter_async_context(contextlib.aclosing(r.aiter_lines()))
            assert (await anext(lines)).startswith("event: status")
        return r.status_code

    return list(await asyncio.gather(*(one() for _ in range(count)))), streams


def other_key_works(live: LiveStack) -> None:
    """Another key's upload, status read, long-poll and event stream, and /readyz: all answer."""
    headers = live.headers(live.new_key(f"other-{uuid.uuid4().hex[:6]}"))
    api = live.api_url
    image = encode(Image.new("RGB", (64, 48), (200, 30, 30)))
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        created = client.post("/api/v1/detections", files={"file": ("a.jpg", image)})
        assert created.status_code == 202, created.text
        path = f"/api/v1/detections/{created.json()['task_id']}"
        assert client.get(path).status_code == 200
        done = client.get(path, params={"wait": 20})
        assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
        with client.stream("GET", f"{path}/events") as events:
            assert events.status_code == 200
            assert '"status":"succeeded"' in events.read().decode()
        assert client.get("/readyz").status_code == 200


def test_one_key_holding_130_event_streams_leaves_the_api_to_everyone_else(
    tmp_path: Path,
) -> None:
    """One key holding 130 event streams (redis-py's default pool was 100): others still served.

    The streams wait on an unfinished task; meanwhile another key's upload, reads, long-poll,
    stream and /readyz all answer."""
    with launch_stack("valkey", tmp_path, {"ML_MAX_WAITS_PER_KEY": "200"}) as live:
        task_id = unfinished_task(live, live.api_key)

        async def scenario() -> list[int]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=live.api_url, limits=limits, timeout=30) as c:
                codes, streams = await open_streams(c, task_id, live.headers(), 130)
                async with streams:
                    await asyncio.to_thread(other_key_works, live)
                    waited = await c.get(f"/api/v1/detections/{task_id}",
                                         params={"wait": 1}, headers=live.headers())  # fmt: skip
                    assert waited.status_code == 200, waited.text
                return codes

        codes = asyncio.run(scenario())
    assert codes == [200] * 130, {c: codes.count(c) for c in set(codes)}


@ONE_STACK
def test_a_key_over_its_concurrent_waits_gets_429(live_stack: LiveStack) -> None:
    """A key already holding its 20 open waits and streams: its next one is a 429.

    Past ML_MAX_WAITS_PER_KEY, the key's next long-poll or stream is a 429 too_many_waits; other
    keys, and the key's plain reads, still answer; a closed stream frees its place."""
    key = live_stack.new_key(f"greedy-{uuid.uuid4().hex[:6]}")
    task_id = unfinished_task(live_stack, key)
    path = f"/api/v1/detections/{task_id}"

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=live_stack.api_url, limits=limits, timeout=30) as c:
            codes, streams = await open_streams(c, task_id, live_stack.headers(key), 20)
            async with streams:
                assert codes == [200] * 20
                await asyncio.to_thread(check_refused)
            await asyncio.to_thread(check_freed)

    def check_refused() -> None:
        with httpx.Client(base_url=live_stack.api_url, headers=live_stack.headers(key)) as c:
            for r in (c.get(f"{path}/events"), c.get(path, params={"wait": 5})):
                assert r.status_code == 429, r.text
                assert r.json()["code"] == "too_many_waits"
                assert "20" in r.json()["detail"]
            assert c.get(path).status_code == 200  # a plain read is not a wait
        other_key_works(live_stack)

    def check_freed() -> None:  # the streams closed: their places are free again
        with httpx.Client(base_url=live_stack.api_url, headers=live_stack.headers(key)) as c:
            deadline = time.monotonic() + 10
            while (r := c.get(path, params={"wait": 0.5})).status_code == 429:
                assert time.monotonic() < deadline, "the closed streams still count"
            assert r.status_code == 200, r.text

    asyncio.run(scenario())
