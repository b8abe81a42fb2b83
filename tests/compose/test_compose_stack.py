"""The shipped compose stack, built and run by scripts/compose_ci.sh, tested through its proxy.

In order: the web page in Chromium, the API with a key, /readyz; then, on the running
containers, two workers, a worker killed mid-task, Redis and RabbitMQ restarted, and the whole
project taken down and up again. Every request goes through the proxy's published port.
The fault steps carry the mark `compose_faults` (COMPOSE_CI_FAULTS=0 leaves them out).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose.conftest import Deployment

pytestmark = pytest.mark.compose

DETECTION_TIMEOUT_MS = 180_000
# what the earlier tests stored, checked again after the restarts and after down/up
KEPT: dict[str, Any] = {}


def test_readyz_through_the_proxy_reports_a_ready_worker(deployment: Deployment) -> None:
    body = deployment.wait_ready(workers=1)
    assert body["status"] == "ready"
    assert body["checks"]["broker"] == "ok" and body["checks"]["result_backend"] == "ok"


def test_api_with_a_key_detects_the_person_in_a_photo(
    deployment: Deployment, photo_file: Path
) -> None:
    anonymous = httpx.post(
        f"{deployment.url}/api/v1/detections",
        files={"file": ("a.jpg", photo_file.read_bytes(), "image/jpeg")},
        timeout=30,
    )
    assert anonymous.status_code == 401
    with deployment.api() as api:
        task_id = deployment.submit(api, photo_file.read_bytes(), "astronaut.jpg")
        body = deployment.wait_final(api, task_id)
        assert body["status"] == "succeeded", body
        labels = {d["label"] for d in body["result"]["detections"]}
        assert "person" in labels
        image = api.get(f"/api/v1/detections/{task_id}/image")
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    KEPT["api"] = (task_id, body["result"]["detections"], image.content)


def test_web_page_sign_in_upload_and_boxes(
    deployment: Deployment, browser: Any, photo_file: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=deployment.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("User name").fill(deployment.user)
    page.get_by_label("Password").fill(deployment.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Detect objects in your images")).to_be_visible()
    page.wait_for_selector("html[data-ready]", state="attached")  # its modules are loaded
    page.get_by_label("Choose images…").set_input_files(str(photo_file))
    card = page.get_by_test_id("task-card").filter(has_text=photo_file.name).first
    expect(card.get_by_test_id("task-status")).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
    person = card.locator('[data-testid="detection-box"][data-label="person"]')
    expect(person.first).to_be_visible()
    context.close()


def _scale_workers(deployment: Deployment, count: int) -> list[str]:
    """`count` workers of the default model, every other service as the compose file says."""
    service, model = deployment.default_worker()
    deployment.run("up", "-d", "--no-build", "--no-recreate", "--scale", f"{service}={count}")
    workers = deployment.containers(service)
    assert len(workers) == count
    deployment.wait_ready(workers=count, model=model)
    return workers


def _succeeded_ids(logs: str) -> set[str]:
    return set(re.findall(r"\[([0-9a-f-]{36})\] succeeded", logs))


@pytest.mark.compose_faults
def test_two_workers_both_take_tasks(deployment: Deployment, photo_file: Path) -> None:
    workers = _scale_workers(deployment, 2)
    before = {w: _succeeded_ids(deployment.logs(w)) for w in workers}
    with deployment.api() as api:
        ids = [deployment.submit(api, photo_file.read_bytes()) for _ in range(10)]
        assert all(deployment.wait_final(api, t)["status"] == "succeeded" for t in ids)
    KEPT["unseen"] = ids[0]  # its annotated image is drawn from the upload only after down/up
    for worker in workers:
        took = (_succeeded_ids(deployment.logs(worker)) - before[worker]) & set(ids)
        assert took, f"worker {worker[:12]} took none of {len(ids)} tasks"


def _in_flight(logs: str) -> set[str]:
    received = set(re.findall(r"\[([0-9a-f-]{36})\] received", logs))
    return received - _succeeded_ids(logs)


def _find_and_kill(deployment: Deployment, workers: list[str], ours: set[str]) -> str | None:
    """SIGKILL the first worker with a task of ours in flight; that worker, or None."""
    for worker in workers:
        pid = int(deployment.state(worker, ".State.Pid"))  # 0 while it restarts
        if pid > 0 and _in_flight(deployment.logs(worker)) & ours:
            subprocess.run(["kill", f"-{signal.SIGKILL.name}", str(pid)], check=True)
            time.sleep(1)  # the log is final once its process is gone
            if _in_flight(deployment.logs(worker)) & ours:  # else it ended just before the kill
                return worker
    return None


@pytest.mark.compose_faults
def test_a_worker_killed_mid_task_comes_back_and_the_task_succeeds(
    deployment: Deployment, big_photo: bytes
) -> None:
    service, model = deployment.default_worker()
    workers = deployment.containers(service)
    restarts = {w: int(deployment.state(w, ".RestartCount")) for w in workers}
    with deployment.api() as api:
        # uploads keep coming until a kill lands: a batch sent all at once can be done by the
        # time the logs are first read, when the workers keep pace with the uploads
        ids: list[str] = []
        killed = None
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline:
            if len(ids) < 40:
                ids += [deployment.submit(api, big_photo, "big.png", "image/png") for _ in range(2)]
            killed = _find_and_kill(deployment, workers, set(ids))
        if killed is None:
            seen = {w[:12]: len(_succeeded_ids(deployment.logs(w)) & set(ids)) for w in workers}
            pytest.fail(f"no task of ours was running when a worker was killed; done: {seen}")
        results = {t: deployment.wait_final(api, t) for t in ids}
    assert all(r["status"] == "succeeded" for r in results.values()), results
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and deployment.state(killed, ".State.Status") != "running":
        time.sleep(1)
    assert deployment.state(killed, ".State.Status") == "running"
    assert int(deployment.state(killed, ".RestartCount")) > restarts[killed]
    deployment.wait_ready(workers=2, model=model)


# `compose restart` with its own default grace period, on either engine: Docker Engine stops the
# node with the container's stop_grace_period (a clean stop); podman's Docker API kills it at
# once (no grace period unless given one), so what the API accepted must be on the broker's
# disk already (publisher confirms, ml_common.celery_config), not in its memory.
@pytest.mark.compose_faults
def test_redis_and_rabbitmq_restarts_lose_nothing_accepted(
    deployment: Deployment, photo_file: Path
) -> None:
    deployment.run("stop", *deployment.worker_services())  # the uploads wait in the queue
    with deployment.api() as api:
        queued = [deployment.submit(api, photo_file.read_bytes()) for _ in range(5)]
        deployment.run("restart", "rabbitmq", "redis")
        deployment.run("up", "-d", "--no-build", "--wait", "rabbitmq", "redis")
        _scale_workers(deployment, 2)
        for task_id in queued:
            assert deployment.wait_final(api, task_id, timeout_s=120)["status"] == "succeeded"
        task_id, detections, _ = KEPT["api"]
        again = deployment.wait_final(api, task_id, timeout_s=30)
        assert again["result"]["detections"] == detections
        # new work is accepted and done after the restarts, too
        fresh = deployment.submit(api, photo_file.read_bytes())
        assert deployment.wait_final(api, fresh)["status"] == "succeeded"


@pytest.mark.compose_faults
def test_down_and_up_keeps_results_and_uploads(deployment: Deployment) -> None:
    deployment.run("down", "--timeout", "30")
    deployment.run("up", "-d", "--no-build", "--wait", timeout=600)
    deployment.wait_ready(workers=1)
    task_id, detections, image = KEPT["api"]
    with deployment.api() as api:
        body = deployment.wait_final(api, task_id, timeout_s=30)
        assert body["status"] == "succeeded"
        assert body["result"]["detections"] == detections
        again = api.get(f"/api/v1/detections/{task_id}/image")
        assert again.status_code == 200 and again.content == image
        drawn = api.get(f"/api/v1/detections/{KEPT['unseen']}/image")
        assert drawn.status_code == 200 and drawn.content[:2] == b"\xff\xd8"
