"""The rendered Kubernetes workloads, played by podman (scripts/k8s_ci.sh), tested through the
API pod: readiness, a photo's boxes, and the securityContext as the containers run it."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import photo

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    missing = [n for n in ("K8S_CI_URL", "K8S_CI_API_KEY") if not os.environ.get(n)]
    if missing:
        pytest.fail(f"run through scripts/k8s_ci.sh: {', '.join(missing)} not set")
    with httpx.Client(
        base_url=os.environ["K8S_CI_URL"],
        headers={"Authorization": f"Bearer {os.environ['K8S_CI_API_KEY']}"},
        timeout=40,
    ) as client:
        yield client


def wait_ready(api: httpx.Client, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = api.get("/readyz")
            body = r.json()
            if r.status_code == 200 and body["checks"].get("model yolox-nano", "").endswith(
                "ready"
            ):
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(3)
    raise AssertionError(f"/readyz not ready in {timeout_s}s: {body}")


def test_readyz_reports_the_worker_pod_with_its_model(api: httpx.Client) -> None:
    body = wait_ready(api)
    checks = body["checks"]
    assert checks["broker"] == checks["result_backend"] == checks["storage"] == "ok", body
    assert checks["model yolox-nano"] == "1 ready", body
    # each worker Deployment serves its own model only (its ML_MODELS): none plays NanoDet here
    assert checks["model nanodet-g-416"] == "no worker: uploads wait", body


def test_a_photo_uploaded_through_the_api_pod_gets_its_boxes(api: httpx.Client) -> None:
    wait_ready(api)
    buf = io.BytesIO()
    photo("astronaut").save(buf, format="JPEG", quality=92)
    r = api.post(
        "/api/v1/detections", files={"file": ("astronaut.jpg", buf.getvalue(), "image/jpeg")}
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 180
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/detections/{task_id}", params={"wait": 25}).json()
        if body["status"] in ("succeeded", "failed"):
            break
    assert body["status"] == "succeeded", body
    assert body["result"]["model_name"] == "yolox-nano", body["result"]
    people = [d for d in body["result"]["detections"] if d["label"] == "person"]
    assert people, body["result"]
    box = people[0]["box"]
    assert 0 <= box["x_min"] < box["x_max"] and 0 <= box["y_min"] < box["y_max"], box
    image = api.get(f"/api/v1/detections/{task_id}/image")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize("pod", os.environ.get("K8S_CI_PODS", "").split() or ["ml-api"])
def test_each_container_runs_as_its_securitycontext_says(pod: str) -> None:
    # podman names a pod's container POD-CONTAINER; the worker's container is `ml-celery`
    container = f"{pod}-{'ml-celery' if pod.startswith('ml-celery') else pod}"
    run = subprocess.run(
        ["podman", "exec", container, "sh", "-c", "id -u; touch /probe 2>&1 || true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    uid, _, touch = run.stdout.partition("\n")
    assert uid.strip() != "0", f"{container} runs as root"
    assert "Read-only file system" in touch, f"{container}: the root filesystem is writable"
