"""NanoDet-g and YOLOX-Nano side by side in one live deployment, each on its own queue; a new
version of a model rolled out while uploads keep coming; an upload for a model with no worker."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from kombu import Connection

from ml_common import records
from ml_common.models import served_models, worker_queues
from ml_tools.devstack import Stack
from tests.conftest import LiveStack, encode, launch_stack, need, photo, redis_db, storage_env
from tests.integration.test_model_formats import YOLOX_NANO_DIR

pytestmark = pytest.mark.integration
MODELS = ("nanodet-g-416", "yolox-nano")


def yolox_version(base: Path, version: str) -> Path:
    """A copy of the YOLOX-Nano folder whose manifest names `version`."""
    folder = base / f"yolox-nano-v{version}"
    folder.mkdir()
    shutil.copy(YOLOX_NANO_DIR / "yolox_nano.onnx", folder / "yolox_nano.onnx")
    (folder / "model.json").write_text(json.dumps({"version": version}))
    return folder


@contextlib.contextmanager
def two_model_stack(base: Path) -> Iterator[LiveStack]:
    """NanoDet-g and YOLOX-Nano (version 1, the default) served side by side, on an embedded
    Valkey of their own: no other stack's workers among the ready ones."""
    need((YOLOX_NANO_DIR / "yolox_nano.onnx").is_file(), f"no YOLOX-Nano in {YOLOX_NANO_DIR}")
    env = {
        "ML_MODELS": ",".join(MODELS),
        "ML_DEFAULT_MODEL": "yolox-nano",
        "ML_MODEL_DIRS": json.dumps({"yolox-nano": str(yolox_version(base, "1"))}),
    }
    with launch_stack("valkey", base, env, models=MODELS) as live:
        yield live


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    with two_model_stack(tmp_path_factory.mktemp("two-models")) as live:
        wait_models(live, {"nanodet-g-416": {"1+"}, "yolox-nano": {"1"}})
        yield live


def models(live: LiveStack) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{live.api_url}/api/v1/models", headers=live.headers(), timeout=10)
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["models"]}


def wait_models(live: LiveStack, want: dict[str, set[str]], timeout_s: float = 180) -> None:
    """Until each model's ready versions are `want`'s ("1+": any, at least one worker)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {name: set(m["versions"]) for name, m in models(live).items()}
        if all(seen[n] == v or (v == {"1+"} and seen[n]) for n, v in want.items()):
            return
        for name, proc in live.stack.procs.items():
            assert proc.poll() is None, f"{name} exited; see {live.stack.log_dir}"
        assert time.monotonic() < deadline, f"models not ready: {seen}"
        time.sleep(0.5)


def upload(live: LiveStack, data: bytes, model: str | None = None) -> str:
    form = {"model": model} if model is not None else {}
    r = httpx.post(f"{live.api_url}/api/v1/detections", files={"file": ("p.jpg", data)},
                   data=form, headers=live.headers(), timeout=30)  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def test_both_models_are_listed_ready_the_default_first(two_models: LiveStack) -> None:
    r = httpx.get(f"{two_models.api_url}/api/v1/models", headers=two_models.headers())
    body = r.json()
    assert body["default"] == "yolox-nano"
    assert [(m["name"], m["default"], m["ready_workers"]) for m in body["models"]] == [
        ("yolox-nano", True, 1),
        ("nanodet-g-416", False, 1),
    ]
    assert body["models"][0]["licence"] == "Apache-2.0"
    checks = httpx.get(f"{two_models.api_url}/readyz").json()["checks"]
    assert checks["model yolox-nano"] == checks["model nanodet-g-416"] == "1 ready"


@pytest.mark.parametrize("model", [*MODELS, None])
def test_each_model_runs_on_its_own_worker(two_models: LiveStack, model: str | None) -> None:
    task_id = upload(two_models, encode(photo("chelsea"), quality=92), model)
    body = two_models.wait_final(task_id)
    assert body["status"] == "succeeded", body
    served = model or "yolox-nano"
    assert body["result"]["model_name"] == served
    assert "cat" in {d["label"] for d in body["result"]["detections"]}
    # the task reached the worker of its model, through that model's queue
    log = (two_models.stack.log_dir / f"worker-{served}.log").read_text()
    assert task_id in log
    other = next(m for m in MODELS if m != served)
    assert task_id not in (two_models.stack.log_dir / f"worker-{other}.log").read_text()


def test_a_new_version_rolls_out_without_losing_a_task(two_models: LiveStack) -> None:
    """Start version 2 beside version 1, wait until it is ready, stop version 1 with a warm
    shutdown, all while uploads keep coming: every task succeeds and names its version."""
    live, data = two_models, encode(photo("astronaut"), quality=85)
    sent: list[tuple[str, bool]] = []  # task id, sent after version 1 had stopped
    stopped, done = threading.Event(), threading.Event()

    def keep_uploading() -> None:
        while not done.is_set():
            sent.append((upload(live, data, "yolox-nano"), stopped.is_set()))
            time.sleep(0.1)

    uploader = threading.Thread(target=keep_uploading)
    uploader.start()
    try:
        v2 = json.dumps({"yolox-nano": str(yolox_version(live.stack.log_dir.parent, "2"))})
        live.stack.start_worker("worker-yolox-nano-v2", "yolox-nano", ML_MODEL_DIRS=v2)
        wait_models(live, {"yolox-nano": {"1", "2"}})
        live.stack.stop_process("worker-yolox-nano", signal.SIGTERM, timeout_s=120)
        stopped.set()
        wait_models(live, {"yolox-nano": {"2"}})
        time.sleep(2)
    finally:
        done.set()
        uploader.join()
    results = [(live.wait_final(task_id, 300), after) for task_id, after in sent]
    assert all(body["status"] == "succeeded" for body, _ in results), results
    versions = [(body["result"]["model_version"], after) for body, after in results]
    assert {v for v, _ in versions} == {"1", "2"}
    assert all(v == "2" for v, after in versions if after)
    assert all(body["result"]["model_name"] == "yolox-nano" for body, _ in results)


def test_an_upload_for_a_model_without_a_worker_waits_for_one(two_models: LiveStack) -> None:
    """Our choice: it is queued (durably) and runs once a worker of that model is ready."""
    live = two_models
    for name in [n for n in live.stack.procs if n.startswith("worker-yolox-nano")]:
        live.stack.stop_process(name, signal.SIGTERM, timeout_s=60)
    wait_models(live, {"yolox-nano": set()})
    task_id = upload(live, encode(photo("chelsea")), "yolox-nano")
    time.sleep(1)
    assert live.status(task_id).json()["status"] == "queued"
    assert models(live)["yolox-nano"]["ready_workers"] == 0
    ready = httpx.get(f"{live.api_url}/readyz")  # NanoDet's worker keeps the deployment ready
    assert ready.status_code == 200
    assert ready.json()["checks"]["model yolox-nano"] == "no worker: uploads wait"
    v3 = json.dumps({"yolox-nano": str(yolox_version(live.stack.log_dir.parent, "3"))})
    live.stack.start_worker("worker-yolox-nano-v3", "yolox-nano", ML_MODEL_DIRS=v3)
    body = live.wait_final(task_id, 300)
    assert body["status"] == "succeeded"
    assert body["result"]["model_version"] == "3"


def test_a_worker_with_a_corrupt_model_file_exits_at_start_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "yolox-nano"
    folder.mkdir()
    (folder / "yolox_nano.onnx").write_bytes(b"\x08\x07 half a download")
    env = {
        "ML_MODELS": "yolox-nano",
        "ML_MODEL_DIRS": json.dumps({"yolox-nano": str(folder)}),
        **storage_env(tmp_path / "storage"),
        "ML_BROKER_URL": "memory://",
    }
    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start_worker("worker")
        assert stack.procs["worker"].wait(120) != 0
    finally:
        stack.stop()
    log = (tmp_path / "logs" / "worker.log").read_text()
    assert f"{folder / 'yolox_nano.onnx'}: not a loadable ONNX model" in log
    assert "ready." not in log  # it never took a task


def test_a_worker_counts_as_ready_only_once_it_takes_tasks(tmp_path: Path) -> None:
    """/readyz and GET /api/v1/models count a worker only once it consumes its model's queue.
    A second worker starts as the compose file starts one, meeting its neighbours first (about
    a second on RabbitMQ), and its model is warm well before that: were it counted then, the
    uploads sent at once would all go to the first worker."""
    # a Redis database of its own: no other stack's worker of the same model among the ready
    backend = redis.Redis.from_url(redis_db(8))
    backend.flushdb()
    try:
        with launch_stack("rabbitmq-redis", tmp_path, {"ML_RESULT_BACKEND": redis_db(8)}) as live:
            (model,) = served_models(live.settings)
            (queue,) = worker_queues(live.settings)[1:]

            def ready() -> set[bytes]:
                return set(backend.scan_iter(match=f"{records.READY_PREFIX}{model}:*"))

            with Connection(str(live.settings.broker_url)) as conn:
                channel = conn.default_channel

                def consumers() -> int:
                    return int(channel.queue_declare(queue=queue, passive=True).consumer_count)

                assert consumers() == 1
                before = ready()
                live.stack.start_worker("worker-2", mingle=True)
                deadline = time.monotonic() + 120
                while not ready() - before:
                    assert live.stack.procs["worker-2"].poll() is None, "worker-2 exited"
                    assert time.monotonic() < deadline, "worker-2 never counted as ready"
                    time.sleep(0.01)
                assert consumers() == 2
    finally:
        backend.flushdb()
