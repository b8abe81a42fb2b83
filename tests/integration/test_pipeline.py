"""End to end through real processes: HTTP upload -> broker -> worker + model -> Redis -> HTTP."""

from __future__ import annotations

import io
import json
import stat
import uuid
from datetime import date
from typing import Any

import httpx
import pytest
from PIL import Image

from ml_common import records
from ml_common.contract import DETECT_TASK
from ml_common.s3storage import S3Storage
from ml_common.storage import LocalStorage, Storage, open_storage
from tests.conftest import STORAGE_PARAMS, LiveStack, encode, photo

# the whole module runs on the local folder (both backends) and on a SeaweedFS bucket
pytestmark = [pytest.mark.integration, STORAGE_PARAMS]


def assert_private(storage: Storage, key: str) -> None:
    """Nobody but the service reads a stored file: no world bits, no anonymous GET."""
    if isinstance(storage, LocalStorage):
        mode = stat.S_IMODE(storage.path(key).stat().st_mode)
        assert mode & 0o007 == 0, "uploads must not be world-readable"
        return
    assert isinstance(storage, S3Storage)
    url = f"{storage.client.meta.endpoint_url.rstrip('/')}/{storage.bucket}/{storage.prefix}{key}"
    assert httpx.get(url).status_code == 403, "uploads must not be readable without a signature"


def labels(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The best detection per label."""
    best: dict[str, dict[str, Any]] = {}
    for det in status["result"]["detections"]:
        if det["label"] not in best or det["score"] > best[det["label"]]["score"]:
            best[det["label"]] = det
    return best


def test_ready(live_stack: LiveStack) -> None:
    r = httpx.get(f"{live_stack.api_url}/readyz")
    assert r.status_code == 200
    assert r.json()["checks"]["workers"].endswith("ready")


def test_astronaut_is_a_person_with_her_box(live_stack: LiveStack, astronaut_jpeg: bytes) -> None:
    r = live_stack.submit(astronaut_jpeg, "astronaut.jpg")
    assert r.status_code == 202, r.text
    created = r.json()
    task_id = created["task_id"]
    assert uuid.UUID(task_id).version == 4
    assert created["status"] == "queued"
    assert r.headers["location"] == created["links"]["self"] == f"/api/v1/detections/{task_id}"

    status = live_stack.wait_final(task_id)
    assert status["status"] == "succeeded", status
    result = status["result"]
    assert (result["width"], result["height"]) == (512, 512)
    assert result["model_name"].startswith("nanodet")
    assert result["inference_ms"] > 0
    assert result["score_threshold"] == live_stack.settings.score_threshold
    assert min(d["score"] for d in result["detections"]) >= result["score_threshold"]
    person = labels(status)["person"]
    assert person["score"] >= 0.5
    box = person["box"]
    # she fills the left two thirds of the photo, from her head to the bottom edge
    assert box["x_min"] < 60 and 300 < box["x_max"] < 470
    assert box["y_min"] < 80 and box["y_max"] > 440
    norm = person["box_normalized"]
    assert norm["x_max"] == pytest.approx(box["x_max"] / 512, abs=1e-3)
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]

    storage = open_storage(live_stack.settings)
    key = storage.upload_key(task_id, "jpg", date.fromisoformat(status["created_at"][:10]))
    assert storage.read(key) == astronaut_jpeg
    assert_private(storage, key)

    image = httpx.get(
        f"{live_stack.api_url}{created['links']['image']}",
        headers=live_stack.headers(),
        follow_redirects=True,
    )
    assert image.status_code == 200
    # on the bucket the API answers with a short-lived URL of it (ML_STORAGE_PRESIGN_S)
    redirects = [r.status_code for r in image.history]
    assert redirects == ([307] if live_stack.settings.storage_presign_s else [])
    assert image.headers["content-type"] == "image/jpeg"
    annotated = Image.open(io.BytesIO(image.content))
    assert annotated.size == (512, 512)
    # boxes are drawn: the annotated image differs from the upload along the person's box
    original = Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB")
    edge = (int(box["x_min"]) + 1, int((box["y_min"] + box["y_max"]) / 2))
    assert annotated.getpixel(edge) != original.getpixel(edge)


def test_chelsea_is_a_cat(live_stack: LiveStack) -> None:
    r = live_stack.submit(encode(photo("chelsea"), "PNG"), "chelsea.png", "image/png")
    assert r.status_code == 202, r.text
    status = live_stack.wait_final(r.json()["task_id"])
    assert status["status"] == "succeeded"
    cat = labels(status)["cat"]
    assert cat["score"] >= 0.4
    assert cat == max(status["result"]["detections"], key=lambda d: d["score"])
    centre_x = (cat["box"]["x_min"] + cat["box"]["x_max"]) / 2
    assert 150 < centre_x < 300  # the cat fills the 451x300 photo


def test_events_stream_ends_with_the_result(live_stack: LiveStack, astronaut_jpeg: bytes) -> None:
    task_id = live_stack.submit(astronaut_jpeg).json()["task_id"]
    seen: list[dict[str, Any]] = []
    with httpx.stream(
        "GET",
        f"{live_stack.api_url}/api/v1/detections/{task_id}/events",
        headers=live_stack.headers(),
        timeout=90,
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
    states = [s["status"] for s in seen]
    assert states[-1] == "succeeded"
    assert states == sorted(set(states), key=["queued", "started", "succeeded"].index)
    assert "person" in labels(seen[-1])


def test_a_task_that_fails_in_the_worker_ends_failed(live_stack: LiveStack) -> None:
    """A corrupt file found only by the worker: the task ends failed with a readable error."""
    settings = live_stack.settings
    storage = open_storage(settings)
    task_id = str(uuid.uuid4())
    key = storage.upload_key(task_id, "jpg")
    storage.write(key, encode(photo("astronaut"))[:2000])  # a truncated JPEG
    import redis

    client = redis.Redis.from_url(str(settings.result_backend))
    record = records.TaskRecord.new(task_id, live_stack.key_id(), key)
    client.hset(records.record_key(task_id), mapping=record.to_hash())
    live_stack.send_task(DETECT_TASK, task_id, upload_key=key, created_at=records.now_iso())
    status = live_stack.wait_final(task_id)
    assert status["status"] == "failed"
    assert status["error"]["type"] == "InvalidImage"
    assert "truncated" in status["error"]["message"] or "decoded" in status["error"]["message"]
    assert status["finished_at"] is not None
    image = httpx.get(f"{live_stack.api_url}/api/v1/detections/{task_id}/image",
                      headers=live_stack.headers())  # fmt: skip
    assert image.status_code == 409
    assert image.json()["code"] == "task_not_finished"


def test_another_keys_task_is_not_found(live_stack: LiveStack, astronaut_jpeg: bytes) -> None:
    task_id = live_stack.submit(astronaut_jpeg).json()["task_id"]
    other = live_stack.new_key(f"other-{uuid.uuid4().hex[:6]}")
    for path in ("", "/image", "/events"):
        r = httpx.get(f"{live_stack.api_url}/api/v1/detections/{task_id}{path}",
                      headers=live_stack.headers(other))  # fmt: skip
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == "task_not_found"
