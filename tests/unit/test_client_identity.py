"""Each web user is an owner of their own toward the API: the API's 404-for-others holds
between web users even when the client's own check (the history) lets a request through."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi.testclient import TestClient

from ml_api.app import create_app as create_api_app
from ml_api.deps import get_queue
from ml_client.schemas import HistoryEntry
from ml_common.apikeys import ON_BEHALF_HEADER, ApiKeyStore
from ml_common.records import history_key
from tests.unit.test_client_routes import (  # noqa: F401  (stack is a fixture)
    RecordingQueue,
    Stack,
    jpeg,
    sign_in,
    stack,
    upload,
)


def _smuggle(web: Stack, user: str, task_id: str) -> None:
    """Put another user's task into `user`'s history, as a bug in the client might."""
    entry = HistoryEntry(
        task_id=task_id, filename="x.jpg", submitted_at=datetime.now(timezone.utc).isoformat()
    )
    web.redis.lpush(history_key(user), entry.model_dump_json())


def test_even_with_the_clients_help_bob_cannot_read_alices_task(stack: Stack) -> None:  # noqa: F811
    token = sign_in(stack.client, "alice")
    task_id = upload(stack.client, token, jpeg()).json()["task_id"]
    stack.finish(task_id)
    assert stack.client.get(f"/app/tasks/{task_id}").json()["status"] == "succeeded"
    stack.client.cookies.clear()
    sign_in(stack.client, "bob")
    _smuggle(stack, "bob", task_id)
    for suffix in ("", "/image", "/events"):
        response = stack.client.get(f"/app/tasks/{task_id}{suffix}")
        assert response.status_code == 404, suffix
        assert response.json()["code"] == "task_not_found"  # said by the API this time


def test_through_the_api_the_clients_key_is_one_owner_per_user(stack: Stack) -> None:  # noqa: F811
    api = create_api_app(stack.settings)
    api.dependency_overrides[get_queue] = lambda: RecordingQueue()
    client_key = stack.settings.client_api_key
    assert client_key is not None
    auth = {"Authorization": f"Bearer {client_key.get_secret_value()}"}
    as_alice = {**auth, ON_BEHALF_HEADER: "alice"}
    with TestClient(api) as http:
        files = {"file": ("a.jpg", jpeg(), "image/jpeg")}
        created = http.post("/api/v1/detections", files=files, headers=as_alice)
        assert created.status_code == 202, created.text
        url = f"/api/v1/detections/{created.json()['task_id']}"
        assert http.get(url, headers=as_alice).status_code == 200
        assert http.get(url, headers={**auth, ON_BEHALF_HEADER: "bob"}).status_code == 404
        assert http.get(url, headers=auth).status_code == 404  # nor the client as itself

        plain, _ = ApiKeyStore(stack.settings.api_keys_path).create("someone")
        ordinary = {"Authorization": f"Bearer {plain}", ON_BEHALF_HEADER: "alice"}
        refused = http.get(url, headers=ordinary)
        assert refused.status_code == 403
        assert refused.json()["code"] == "not_allowed"
