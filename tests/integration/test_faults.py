"""Faults survived, against real processes: worker kills, broker and Redis restarts, a dying
API, poison images, and a soak with random kills. Each test starts a stack of its own."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from ml_common import records
from ml_common.retention import remove_orphan_uploads
from ml_common.storage import open_storage
from ml_tools.devstack import free_port
from tests.conftest import (
    RABBITMQ_NODE,
    ROOT,
    LiveStack,
    encode,
    launch_stack,
    need_rabbitmq,
    photo,
    reachable,
    stored_annotated,
)

pytestmark = pytest.mark.integration
ARTIFACTS = ROOT / "test-artifacts"


def slow_image(w: int = 8000, h: int = 5000) -> bytes:
    """A 40-megapixel gradient in a ~130 kB PNG: long to decode (a PNG has no reduced decode),
    a valid image."""
    row = np.linspace(0, 255, w, dtype=np.uint8)
    grid = np.tile(row, (h, 1))
    return encode(Image.fromarray(np.stack([grid, grid[::-1], grid], -1)), "PNG")


def meta(live: LiveStack, task_id: str) -> dict[str, Any] | None:
    client = redis.Redis.from_url(str(live.settings.result_backend))
    raw = client.get(records.meta_key(task_id))
    return json.loads(raw) if raw else None


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def child_pid(live: LiveStack, task_id: str) -> int:
    """The pool process running `task_id`, as Celery recorded it with STARTED."""
    started = wait_for(
        lambda: (m := meta(live, task_id)) and m["status"] == "STARTED" and m, 60, "STARTED"
    )
    return int(started["result"]["pid"])


class StateRecorder:
    """Every state Celery publishes for one task, as a subscriber sees them."""

    def __init__(self, live: LiveStack, task_id: str) -> None:
        self.states: list[str] = []
        self._pubsub = redis.Redis.from_url(str(live.settings.result_backend)).pubsub()
        self._pubsub.subscribe(records.meta_key(task_id))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(redis.RedisError):
                msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg:
                    self.states.append(json.loads(msg["data"])["status"])

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(2)
        return self.states


def annotated_files(live: LiveStack, task_id: str) -> list[str]:
    """The task's annotated images, once asked for: the API draws one on the first request."""
    image = httpx.get(f"{live.api_url}/api/v1/detections/{task_id}/image", headers=live.headers())
    assert image.status_code == 200, image.text
    return stored_annotated(live.settings, task_id)


@pytest.fixture
def rabbit_stack(tmp_path: Path) -> Iterator[LiveStack]:
    with launch_stack("rabbitmq-redis", tmp_path) as live:
        yield live


def test_worker_process_killed_mid_task_is_redelivered_once(
    rabbit_stack: LiveStack, record_property: Any
) -> None:
    record_property("case", "worker pool process SIGKILLed in the middle of a task")
    live = rabbit_stack
    task_id = live.submit(slow_image(), "slow.png", "image/png").json()["task_id"]
    recorder = StateRecorder(live, task_id)
    os.kill(child_pid(live, task_id), signal.SIGKILL)
    final = live.wait_final(task_id, 180)
    states = recorder.stop()
    assert final["status"] == "succeeded", final
    assert "FAILURE" not in states, states  # the client never saw it fail
    assert states[-1] == "SUCCESS" and states.count("SUCCESS") == 1
    assert len(annotated_files(live, task_id)) == 1
    record_property("observed", f"redelivered, succeeded once; states seen {'→'.join(states)}; "
                                "one annotated image")  # fmt: skip


def test_whole_worker_killed_then_replaced_finishes_the_task(
    rabbit_stack: LiveStack, record_property: Any
) -> None:
    record_property("case", "whole worker (every process) SIGKILLed mid-task, a new one started")
    live = rabbit_stack
    task_id = live.submit(slow_image(), "slow.png", "image/png").json()["task_id"]
    child_pid(live, task_id)
    live.stack.stop_process("worker", signal.SIGKILL)  # the host died: every process at once
    assert meta(live, task_id)["status"] == "STARTED"  # type: ignore[index]
    live.stack.start_worker("worker2")
    final = live.wait_final(task_id, 180)
    assert final["status"] == "succeeded", final
    assert len(annotated_files(live, task_id)) == 1
    record_property("observed", "RabbitMQ redelivered the unacked task to the new worker; "
                                "succeeded, one annotated image")  # fmt: skip


def rabbitmqctl(*args: str) -> None:
    node = ["-n", RABBITMQ_NODE] if RABBITMQ_NODE else []
    subprocess.run(
        ["rabbitmqctl", "-q", *node, *args], check=True, capture_output=True, timeout=120
    )


def test_broker_restart_loses_nothing_and_everyone_reconnects(
    rabbit_stack: LiveStack, record_property: Any
) -> None:
    record_property("case", "RabbitMQ stopped and restarted with tasks queued and running")
    live = rabbit_stack
    data = encode(photo("astronaut"))
    ids = [live.submit(data).json()["task_id"] for _ in range(6)]
    rabbitmqctl("stop_app")
    try:
        t0 = time.monotonic()
        r = live.submit(data)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "queue_unavailable"
        refused_s = time.monotonic() - t0
        assert refused_s < 15
        assert r.headers["retry-after"]
        ready = httpx.get(f"{live.api_url}/readyz", timeout=20)
        assert ready.status_code == 503
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    after = wait_for(lambda: (r := live.submit(data)).status_code == 202 and r, 60, "API recovery")
    ids.append(after.json()["task_id"])
    finals = [live.wait_final(t, 180) for t in ids]
    assert [f["status"] for f in finals] == ["succeeded"] * len(ids)
    stored = list(open_storage(live.settings).uploads())
    assert len(stored) == len(ids)  # the refused upload left no file behind
    record_property("observed", f"upload while down: 503 queue_unavailable after {refused_s:.1f}s,"
                    f" nothing stored; /readyz 503; API and worker reconnected by themselves; "
                    f"{len(ids)}/{len(ids)} tasks succeeded")  # fmt: skip


@contextlib.contextmanager
def own_redis(tmp_path: Path) -> Iterator[tuple[int, Any, Any]]:
    """A Redis of this test's own, with the append-only file a deployment uses."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        wait_for(lambda: reachable("127.0.0.1", port), 10, "redis start")

    def stop() -> None:
        proc = procs.pop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)

    start()
    try:
        yield port, start, stop
    finally:
        while procs:
            stop()


def test_redis_restart(tmp_path: Path, record_property: Any) -> None:
    record_property("case", "Redis (AOF persistence) stopped and restarted while a task runs")
    need_rabbitmq()
    with (
        own_redis(tmp_path) as (port, start, stop),
        launch_stack(
            "rabbitmq-redis", tmp_path, {"ML_RESULT_BACKEND": f"redis://127.0.0.1:{port}/0"}
        ) as live,
    ):
        data = encode(photo("astronaut"))
        done = live.submit(data).json()["task_id"]
        assert live.wait_final(done)["status"] == "succeeded"
        running = live.submit(slow_image(), "slow.png", "image/png").json()["task_id"]
        child_pid(live, running)
        stop()
        try:
            r = live.status(done)
            assert r.status_code == 503 and r.json()["code"] == "result_backend_unavailable"
            api_log = (live.stack.log_dir / "api.log").read_text()
            assert f"/{done} answered 503 result_backend_unavailable" in api_log  # for the operator
            r = live.submit(data)
            assert r.status_code == 503
            time.sleep(2)  # the slow task finishes while Redis is down
        finally:
            start()
        assert wait_for(lambda: live.status(done).status_code == 200, 30, "API recovery")
        assert live.wait_final(done)["status"] == "succeeded"  # kept across the restart
        final = live.wait_final(running, 180)
        assert final["status"] == "succeeded", final  # finished during the outage: not lost
        later = live.submit(data)
        assert later.status_code == 202
        assert live.wait_final(later.json()["task_id"])["status"] == "succeeded"
    record_property("observed", "status and upload 503 result_backend_unavailable while down; "
                    "earlier result kept; the task that finished during the outage stored its "
                    "result (Celery retried the store); API recovered without restart")  # fmt: skip


def test_poison_image_fails_in_bounded_time_and_the_worker_lives_on(
    tmp_path: Path, record_property: Any
) -> None:
    record_property(
        "case", "poison image that outlasts the time limits (81 Mpx PNG, soft 0.5 s, hard 1.5 s)"
    )
    # the worker decodes only what the model needs: a poison must be a PNG (no reduced decode)
    # big enough that decoding alone outlasts the soft limit
    limits = {"ML_TASK_SOFT_TIME_LIMIT_S": "0.5", "ML_TASK_TIME_LIMIT_S": "1.5",
              "ML_MAX_IMAGE_PIXELS": "85000000"}  # fmt: skip
    with launch_stack("rabbitmq-redis", tmp_path, limits) as live:
        t0 = time.monotonic()
        poison_png = slow_image(9000, 9000)
        poison = live.submit(poison_png, "poison.png", "image/png").json()["task_id"]
        final = live.wait_final(poison, 60)
        assert final["status"] == "failed", final
        assert final["error"]["type"] in ("SoftTimeLimitExceeded", "TimeLimitExceeded")
        failed_s = time.monotonic() - t0
        assert failed_s < 30
        ok = live.submit(encode(photo("astronaut"))).json()["task_id"]
        assert live.wait_final(ok, 120)["status"] == "succeeded"
        record_property("observed", f"failed with {final['error']['type']} after {failed_s:.1f}s; "
                        "the next image succeeded on the same worker")  # fmt: skip


def test_api_killed_mid_upload_leaves_no_task_that_never_ends(
    tmp_path: Path, record_property: Any
) -> None:
    record_property("case", "API SIGKILLed with uploads in flight, then restarted")
    with launch_stack("rabbitmq-redis", tmp_path) as live:
        data = encode(photo("coffee"))
        accepted: list[str] = []

        def upload_until_refused() -> None:
            with contextlib.suppress(httpx.HTTPError):
                while True:
                    r = live.submit(data)
                    if r.status_code == 202:
                        accepted.append(r.json()["task_id"])

        threads = [threading.Thread(target=upload_until_refused) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(accepted) >= 5, 60, "some uploads")
        live.stack.stop_process("api", signal.SIGKILL)
        for t in threads:
            t.join(30)
        live.stack.start_api()
        live.stack.wait_ready()
        finals = [live.wait_final(t, 180)["status"] for t in accepted]
        assert finals == ["succeeded"] * len(accepted)
        # every upload left on disk now belongs to an accepted task, or is an orphan that the
        # clean-up removes (grace 0 here; an hour in production)
        removed = remove_orphan_uploads(live.settings, grace_s=0)
        storage = open_storage(live.settings)
        stored = {storage.parse(key)[2] for key, _ in storage.uploads()}
        assert set(accepted) <= stored
        # an upload the API queued just before it died is a real task whose 202 never reached
        # the client: it must run to its end like the others, never stay queued
        unanswered = stored - set(accepted)
        late = [live.wait_final(t, 180)["status"] for t in sorted(unanswered)]
        assert late == ["succeeded"] * len(unanswered), (removed, unanswered)
        record_property(
            "observed",
            f"{len(accepted)}/{len(accepted)} accepted tasks succeeded; {removed} orphan "
            f"upload(s) removed by the clean-up; {len(unanswered)} unanswered task(s) succeeded",
        )


def test_soak_with_random_worker_kills(tmp_path: Path, record_property: Any) -> None:
    """Thousands of tasks (ML_SOAK_TASKS) while pool processes are killed at random."""
    total = int(os.environ.get("ML_SOAK_TASKS", "500"))
    record_property("case", f"soak: {total} tasks, pool processes SIGKILLed every 5-10 s")
    small = encode(photo("astronaut").resize((128, 128)))
    unlimited = {"ML_RATE_LIMIT_PER_MINUTE": str(total * 10)}  # the soak is about faults
    with launch_stack("rabbitmq-redis", tmp_path, unlimited, concurrency=2) as live:
        accepted: list[str] = []
        kills = 0
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            client = redis.Redis.from_url(str(live.settings.result_backend))
            while not stop.wait(random.uniform(5, 10)):
                keys = client.keys(f"{records.CELERY_META_PREFIX}*")
                metas = [json.loads(v) for v in (client.mget(keys) if keys else []) if v]
                pids = {m["result"]["pid"] for m in metas if m["status"] == "STARTED"}
                if pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(random.choice(sorted(pids)), signal.SIGKILL)
                        kills += 1

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        t0 = time.monotonic()
        with httpx.Client(base_url=live.api_url, headers=live.headers(), timeout=30) as client:
            for _ in range(total):
                r = client.post(
                    "/api/v1/detections", files={"file": ("s.jpg", small, "image/jpeg")}
                )
                assert r.status_code == 202, r.text
                accepted.append(r.json()["task_id"])
        finals = {}
        for task_id in accepted:
            finals[task_id] = live.wait_final(task_id, 600)["status"]
        stop.set()
        elapsed = time.monotonic() - t0
    counts = {s: list(finals.values()).count(s) for s in set(finals.values())}
    report = {"accepted": len(accepted), "final": counts, "missing": total - len(finals),
              "worker_kills": kills, "seconds": round(elapsed, 1)}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(report, indent=2))
    assert len(set(accepted)) == total
    assert counts == {"succeeded": total}, report
    record_property("observed", f"{counts.get('succeeded', 0)}/{total} succeeded, 0 missing, "
                    f"{kills} kills, {elapsed:.0f}s")  # fmt: skip
