"""Web client /app/... routes, with the client calling the real API app through ASGITransport.

The API's queue is replaced by a recorder, and a test "finishes" a task by writing what a worker
would write to Redis; everything between browser and Redis is the real code.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr

from ml_api.app import create_app as create_api_app
from ml_api.deps import get_queue
from ml_client.app import create_app
from ml_client.settings import ClientSettings
from ml_common import records
from ml_common.apikeys import ApiKeyStore
from ml_common.batchhooks import FINISH_KEYS, FINISH_SCRIPT, finish_args
from ml_common.contract import DetectPayload
from ml_common.storage import LocalStorage

PASSWORD = "a-fine-password"
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
PERSON = {
    "label": "person",
    "class_id": 0,
    "score": 0.91,
    "box": {"x_min": 10, "y_min": 5, "x_max": 50, "y_max": 45},
    "box_normalized": {"x_min": 0.15625, "y_min": 0.104, "x_max": 0.78125, "y_max": 0.9375},
}


@dataclass
class RecordingQueue:
    submitted: dict[str, DetectPayload] = field(default_factory=dict)

    def submit(self, task_id: str, payload: DetectPayload, *, bulk: bool = False) -> None:
        self.submitted[task_id] = payload


@dataclass
class Stack:
    client: TestClient
    queue: RecordingQueue
    settings: ClientSettings
    redis: redis.Redis

    def finish(self, task_id: str, detections: list[dict[str, Any]] | None = None) -> None:
        """Do what the worker does when a task succeeds."""
        storage = LocalStorage(self.settings.storage_dir)
        upload_key = self.queue.submitted[task_id]["upload_key"]
        annotated = storage.annotated_key(upload_key, "jpg")
        storage.write(annotated, jpeg(64, 48))
        result = {
            "width": 64,
            "height": 48,
            "model_name": "fake",
            "model_version": "1",
            "inference_ms": 1.5,
            "detections": [PERSON] if detections is None else detections,
        }
        self._meta(task_id, {"status": "SUCCESS", "result": result})

    def fail(self, task_id: str) -> None:
        error = {"exc_type": "InvalidImage", "exc_message": ["the image could not be decoded"]}
        self._meta(task_id, {"status": "FAILURE", "result": error})

    def _meta(self, task_id: str, meta: dict[str, Any]) -> None:
        meta |= {"task_id": task_id, "date_done": datetime.now(timezone.utc).isoformat()}
        self.redis.set(records.meta_key(task_id), json.dumps(meta), ex=120)
        batch_id = self.queue.submitted[task_id].get("batch_id")
        if batch_id:  # a batch item's end is counted (ml_celery.webhooks.finish_batch_item)
            state = "succeeded" if meta["status"] == "SUCCESS" else "failed"
            args = finish_args(batch_id, [task_id], state, 120)
            self.redis.eval(FINISH_SCRIPT, FINISH_KEYS, *args)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _settings(tmp_path: Path, redis_url: str) -> ClientSettings:
    keys = ApiKeyStore(tmp_path / "api-keys.json")
    plain, _ = keys.create("web-client", delegates=True)
    users = ",".join(f"{name}:{CHEAP.hash(PASSWORD)}" for name in ("alice", "bob"))
    return ClientSettings(
        _env_file=None,  # type: ignore[call-arg]
        storage_dir=tmp_path,
        result_backend=redis_url,  # type: ignore[arg-type]
        result_expires_s=120,
        max_upload_bytes=200_000,
        secret_key=SecretStr("test-secret-" + uuid.uuid4().hex),
        client_api_key=SecretStr(plain),
        client_users=SecretStr(users),
    )


def _with_api_lifespan(client_app: FastAPI, api_app: FastAPI) -> None:
    """Run the API's lifespan inside the client's, so both share the test's event loop."""
    inner = client_app.router.lifespan_context

    @asynccontextmanager
    async def both(app: FastAPI) -> AsyncIterator[None]:
        async with api_app.router.lifespan_context(api_app), inner(app):
            yield

    client_app.router.lifespan_context = both


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    settings = _settings(tmp_path, redis_url)
    queue = RecordingQueue()
    api_app = create_api_app(settings)
    api_app.dependency_overrides[get_queue] = lambda: queue
    client_app = create_app(settings, api_transport=httpx.ASGITransport(app=api_app))
    _with_api_lifespan(client_app, api_app)
    r = redis.Redis.from_url(redis_url)
    with TestClient(client_app) as client:
        yield Stack(client, queue, settings, r)
    r.close()


def sign_in(client: TestClient, user: str = "alice") -> str:
    """Sign in; returns the page's CSRF token."""
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    data = {"username": user, "password": PASSWORD, "csrf_token": token.group(1)}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303
    meta = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert meta
    return meta.group(1)


def upload(
    client: TestClient, token: str | None, data: bytes, name: str = "photo.jpg"
) -> httpx.Response:
    headers = {"X-CSRF-Token": token} if token else {}
    return client.post("/app/uploads", files={"file": (name, data, "image/jpeg")}, headers=headers)


def test_upload_goes_to_the_api_and_links_point_at_the_client(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = upload(stack.client, token, jpeg())
    assert response.status_code == 202, response.text
    body = response.json()
    task_id = body["task_id"]
    assert body["status"] == "queued"
    assert body["links"]["self"] == f"/app/tasks/{task_id}"
    assert body["links"]["events"] == f"/app/tasks/{task_id}/events"
    assert task_id in stack.queue.submitted
    status = stack.client.get(f"/app/tasks/{task_id}").json()
    assert status["status"] == "queued"
    assert status["links"]["image"] == f"/app/tasks/{task_id}/image"


def test_result_image_original_and_events_once_finished(stack: Stack) -> None:
    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    stack.finish(task_id)

    status = stack.client.get(f"/app/tasks/{task_id}").json()
    assert status["status"] == "succeeded"
    assert status["result"]["detections"][0]["label"] == "person"

    image = stack.client.get(f"/app/tasks/{task_id}/image")
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content.startswith(b"\xff\xd8")
    original = stack.client.get(f"/app/tasks/{task_id}/original")
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == jpeg()

    events = stack.client.get(f"/app/tasks/{task_id}/events")
    assert events.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in events.text.split("\n\n") if b.strip()]
    assert blocks[-1].startswith("event: status\ndata: ")
    final = json.loads(blocks[-1].split("data: ", 1)[1])
    assert final["status"] == "succeeded"
    assert final["links"]["self"] == f"/app/tasks/{task_id}"


def test_image_before_success_is_409(stack: Stack) -> None:
    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    response = stack.client.get(f"/app/tasks/{task_id}/image")
    assert response.status_code == 409
    assert response.json()["code"] == "task_not_finished"


def test_failed_task_reports_its_error(stack: Stack) -> None:
    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    stack.fail(task_id)
    body = stack.client.get(f"/app/tasks/{task_id}").json()
    assert body["status"] == "failed"
    assert body["error"] == {"type": "InvalidImage", "message": "the image could not be decoded"}


def test_history_lists_the_users_tasks_newest_first(stack: Stack) -> None:
    token = sign_in(stack.client)
    first = upload(stack.client, token, jpeg(), "first.jpg").json()["task_id"]
    second = upload(stack.client, token, jpeg(), "../../second.jpg").json()["task_id"]
    stack.finish(first)
    tasks = stack.client.get("/app/tasks").json()["tasks"]
    assert [t["task_id"] for t in tasks] == [second, first]
    assert [t["filename"] for t in tasks] == ["second.jpg", "first.jpg"]
    assert [t["status"]["status"] for t in tasks] == ["queued", "succeeded"]


def test_another_users_task_is_not_found(stack: Stack) -> None:
    token = sign_in(stack.client, "alice")
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    stack.finish(task_id)
    stack.client.cookies.clear()
    sign_in(stack.client, "bob")
    for suffix in ("", "/image", "/original", "/events"):
        response = stack.client.get(f"/app/tasks/{task_id}{suffix}")
        assert response.status_code == 404, suffix
        assert response.json()["code"] == "task_not_found"
    assert stack.client.get("/app/tasks").json() == {"tasks": []}


def test_forget_removes_a_task_from_the_history(stack: Stack) -> None:
    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    assert stack.client.delete(f"/app/tasks/{task_id}").status_code == 403
    headers = {"X-CSRF-Token": token}
    assert stack.client.delete(f"/app/tasks/{task_id}", headers=headers).status_code == 204
    assert stack.client.get("/app/tasks").json() == {"tasks": []}
    assert stack.client.get(f"/app/tasks/{task_id}").status_code == 404


def test_upload_without_the_csrf_header_is_refused(stack: Stack) -> None:
    sign_in(stack.client)
    response = upload(stack.client, None, jpeg())
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert response.headers["content-type"] == "application/json"
    assert upload(stack.client, "forged", jpeg()).status_code == 403
    assert stack.queue.submitted == {}


def test_upload_when_signed_out_is_401_and_never_reaches_the_api(stack: Stack) -> None:
    response = upload(stack.client, "anything", jpeg())
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert stack.queue.submitted == {}


def test_not_an_image_is_refused_in_words(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = upload(stack.client, token, b"just some text", "notes.jpg")
    assert response.status_code == 415
    assert "not an image of an accepted kind: JPEG, PNG" in response.json()["detail"]


def test_too_large_is_413(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = upload(stack.client, token, b"\xff" * 300_000)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_missing_file_field_is_422(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = stack.client.post(
        "/app/uploads", data={"other": "x"}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 422


def test_bad_task_id_is_422_json(stack: Stack) -> None:
    sign_in(stack.client)
    response = stack.client.get("/app/tasks/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_a_refused_api_key_is_reported_as_502(stack: Stack) -> None:
    token = sign_in(stack.client)
    ApiKeyStore(stack.settings.api_keys_path).revoke("web-client")
    response = upload(stack.client, token, jpeg())
    assert response.status_code == 502
    assert response.json()["code"] == "api_key_refused"


def test_an_unreachable_api_is_503(tmp_path: Path, redis_url: str) -> None:
    settings = _settings(tmp_path, redis_url).model_copy(
        update={"client_api_url": httpx.URL("http://127.0.0.1:9")}
    )
    with TestClient(create_app(settings)) as client:
        token = sign_in(client)
        response = upload(client, token, jpeg())
        assert response.status_code == 503
        assert response.json()["code"] == "api_unavailable"
        assert response.headers["retry-after"] == "5"


def test_tasks_the_api_forgot_leave_the_history(stack: Stack) -> None:
    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    stack.redis.delete(records.record_key(task_id))  # expired in the API
    assert stack.client.get("/app/tasks").json() == {"tasks": []}
    assert stack.client.get(f"/app/tasks/{task_id}").status_code == 404


def test_the_pages_min_score_reaches_the_worker_and_a_bad_one_is_422(stack: Stack) -> None:
    token = sign_in(stack.client)
    headers = {"X-CSRF-Token": token}
    files = {"file": ("a.jpg", jpeg(), "image/jpeg")}
    sent = stack.client.post("/app/uploads", files=files, data={"min_score": "0.1"},
                             headers=headers)  # fmt: skip
    assert sent.status_code == 202, sent.text
    assert stack.queue.submitted[sent.json()["task_id"]]["min_score"] == 0.1
    query = stack.client.post("/app/uploads?min_score=0.2", files=files, headers=headers)
    assert stack.queue.submitted[query.json()["task_id"]]["min_score"] == 0.2
    bad = stack.client.post("/app/uploads", files=files, data={"min_score": "2"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_min_score"


def test_a_tasks_csv_is_the_apis_in_the_batch_format(stack: Stack) -> None:
    from ml_api.exports import CSV_COLUMNS

    token = sign_in(stack.client)
    task_id = upload(stack.client, token, jpeg(), "cat.jpg").json()["task_id"]
    stack.finish(task_id)
    answer = stack.client.get(f"/app/tasks/{task_id}/export?format=csv")
    assert answer.status_code == 200 and answer.headers["content-disposition"] == "attachment"
    header, row = answer.text.splitlines()[:2]
    assert tuple(header.split(",")) == CSV_COLUMNS and row.startswith(f"cat.jpg,{task_id},")
    sign_in(stack.client, "bob")
    assert stack.client.get(f"/app/tasks/{task_id}/export?format=csv").status_code == 404
