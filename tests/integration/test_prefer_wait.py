"""One request per image: `Prefer: wait` on POST /detections, the raw-body upload, and the
SDK and `mlprod detect` calls built on them, against the live stack and the real model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MLPROD, LiveStack, encode, photo

pytestmark = pytest.mark.integration
ONE_STACK = pytest.mark.parametrize("live_stack", ["valkey"], indirect=True)
DETECTIONS = "/api/v1/detections"


@pytest.fixture(scope="module")
def chelsea() -> bytes:
    return encode(photo("chelsea"), quality=90)


def post_raw(live: LiveStack, data: bytes, name: str = "cat.jpg", **headers: str) -> Any:
    return httpx.post(
        f"{live.api_url}{DETECTIONS}",
        content=data,
        params={"filename": name},
        headers={**live.headers(), "Content-Type": "image/jpeg", **headers},
        timeout=90,
    )


def boxes(status: dict[str, Any]) -> list[tuple[str, list[float]]]:
    found = status["result"]["detections"]
    return sorted((d["label"], [round(v, 1) for v in d["box"].values()]) for d in found)


def test_prefer_wait_answers_200_with_the_body_a_get_gives(
    live_stack: LiveStack, chelsea: bytes
) -> None:
    live = live_stack
    r = post_raw(live, chelsea, Prefer="wait=60")
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "wait=60"
    body = r.json()
    assert body["status"] == "succeeded" and body["result"]["detections"]
    assert r.headers["location"] == body["links"]["self"]
    assert body == live.status(body["task_id"]).json()


def test_prefer_wait_too_short_for_the_task_answers_202_with_its_id(
    live_stack: LiveStack, chelsea: bytes
) -> None:
    live = live_stack
    r = post_raw(live, chelsea, Prefer="wait=0.01")
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "wait=0.01"
    assert set(r.json()) == {"task_id", "status", "links"}
    assert live.wait_final(r.json()["task_id"])["status"] == "succeeded"


@ONE_STACK
def test_a_raw_upload_gives_the_same_result_as_the_form(
    live_stack: LiveStack, chelsea: bytes
) -> None:
    live = live_stack
    raw = post_raw(live, chelsea, Prefer="wait=60").json()
    r = httpx.post(f"{live.api_url}{DETECTIONS}", headers={**live.headers(), "Prefer": "wait=60"},
                   files={"file": ("cat.jpg", chelsea, "image/jpeg")}, timeout=90)  # fmt: skip
    assert r.status_code == 200, r.text
    form = r.json()
    assert raw["task_id"] != form["task_id"]
    assert boxes(raw) == boxes(form) and any(label == "cat" for label, _ in boxes(raw))
    assert (raw["result"]["width"], raw["result"]["height"]) == (451, 300)


@ONE_STACK
def test_a_retry_with_prefer_wait_gets_the_first_task_finished(
    live_stack: LiveStack, chelsea: bytes
) -> None:
    live = live_stack
    key = {"Idempotency-Key": f"wait-{uuid.uuid4()}"}
    first = post_raw(live, chelsea, **key)
    assert first.status_code == 202
    again = post_raw(live, chelsea, Prefer="wait=60", **key)
    assert again.status_code == 200, again.text
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["status"] == "succeeded"
    # another key's retry with the same Idempotency-Key gets a task of its own
    theirs = {"Authorization": f"Bearer {live.new_key('other')}"}
    other = httpx.post(f"{live.api_url}{DETECTIONS}", content=chelsea, timeout=90,
                       headers={**theirs, "Content-Type": "image/jpeg", "Prefer": "wait=60",
                                **key})  # fmt: skip
    assert other.status_code == 200 and other.json()["task_id"] != first.json()["task_id"]
    mine = f"{live.api_url}{DETECTIONS}/{first.json()['task_id']}"
    assert httpx.get(mine, headers=theirs, timeout=10).status_code == 404


@ONE_STACK
def test_the_sdk_detects_one_image_in_one_call(
    live_stack: LiveStack, chelsea: bytes, tmp_path: Path
) -> None:
    from mlprod_client import AsyncClient, Client

    live = live_stack
    path = tmp_path / "cat.jpg"
    path.write_bytes(chelsea)
    with Client(live.api_url, live.api_key) as api:
        status = api.detect_wait(path, idempotency_key=str(uuid.uuid4()))
        assert status["status"] == "succeeded" and boxes(status)
        # a wait too short for one request: it goes on waiting on the task
        assert api.detect_wait(chelsea, wait=0.01)["status"] in ("queued", "started")

    async def use_async() -> dict[str, Any]:
        async with AsyncClient(live.api_url, live.api_key) as api:
            return await api.detect_wait(path, name="renamed.jpg")

    status = asyncio.run(use_async())
    assert status["status"] == "succeeded" and boxes(status)


@ONE_STACK
def test_mlprod_detect_of_one_image(live_stack: LiveStack, chelsea: bytes, tmp_path: Path) -> None:
    live = live_stack
    (tmp_path / "cat.jpg").write_bytes(chelsea)
    out = tmp_path / "out"
    env = {**os.environ, "MLPROD_API_KEY": live.api_key, "MLPROD_API_URL": live.api_url}
    done = subprocess.run(
        [MLPROD, "detect", str(tmp_path / "cat.jpg"), "--out", str(out), "--annotated"],
        env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    [line] = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["file_name"] == "cat.jpg"
    assert (out / "annotated" / "cat.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert "batch_id" not in (out / "mlprod-manifest.json").read_text().replace(
        '"batch_id": null', ""
    )
