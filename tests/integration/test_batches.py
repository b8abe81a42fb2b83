"""Batches, cancel, idempotent submits and exports against the real stack (worker, model,
broker, Redis)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import MLPROD, STORAGE_PARAMS, TEST_AMQP, LiveStack, encode, launch_stack, photo

pytestmark = pytest.mark.integration
FINAL = {"succeeded", "failed", "cancelled"}


def tiny_jpeg(seed: int) -> bytes:
    """A small, distinct JPEG: the model still runs, but decoding costs next to nothing."""
    return encode(Image.new("RGB", (48, 32), (seed % 251, (seed * 7) % 251, (seed * 13) % 251)))


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def post_batch(
    live: LiveStack, files: list[tuple[str, bytes, str]], **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{live.api_url}/api/v1/batches",
        files=[("files", f) for f in files],
        headers={**live.headers(), **headers},
        timeout=300,
    )


def batch_status(live: LiveStack, batch_id: str, **params: Any) -> dict[str, Any]:
    r = httpx.get(
        f"{live.api_url}/api/v1/batches/{batch_id}",
        params=params,
        headers=live.headers(),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_batch(live: LiveStack, batch_id: str, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = batch_status(live, batch_id, limit=1)
        if body["finished"]:
            return body
        time.sleep(1)
    raise AssertionError(f"batch {batch_id} not finished after {timeout_s}s: {body['counts']}")


def export(live: LiveStack, path: str, fmt: str) -> httpx.Response:
    r = httpx.get(
        f"{live.api_url}/api/v1/{path}/export",
        params={"format": fmt},
        headers=live.headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r


def inferences(live: LiveStack) -> dict[str, int]:
    """How many times the model ran per task id, from the workers' logs (Celery's line of a
    detect task that succeeded)."""
    counts: dict[str, int] = {}
    for log in live.stack.log_dir.glob("worker*.log"):
        for task_id in re.findall(r"detect\[([0-9a-f-]{36})\] succeeded", log.read_text()):
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


@STORAGE_PARAMS  # the exports read the stored images: on the bucket too
def test_batch_of_images_and_a_non_image_exports_every_format(live_stack: LiveStack) -> None:
    live = live_stack
    cat = encode(photo("chelsea"), quality=90)
    files = [("cat.jpg", cat, "image/jpeg"), ("notes.txt", b"hello", "text/plain"),
             ("red.jpg", tiny_jpeg(1), "image/jpeg")]  # fmt: skip
    r = post_batch(live, files)
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    assert r.json()["total"] == 3
    done = wait_batch(live, batch_id)
    assert done["counts"]["succeeded"] == 2 and done["counts"]["failed"] == 1
    page = batch_status(live, batch_id)["items"]
    assert [i["file_name"] for i in page] == ["cat.jpg", "notes.txt", "red.jpg"]
    assert page[1]["error"]["type"] == "unsupported_media_type"

    lines = [json.loads(x) for x in export(live, f"batches/{batch_id}", "jsonl").text.splitlines()]
    assert sorted(x["file_name"] for x in lines) == ["cat.jpg", "notes.txt", "red.jpg"]
    rows = list(csv.DictReader(io.StringIO(export(live, f"batches/{batch_id}", "csv").text)))
    assert any(row["file_name"] == "cat.jpg" and row["label"] == "cat" for row in rows)
    coco = export(live, f"batches/{batch_id}", "coco").json()
    assert {i["file_name"] for i in coco["images"]} == {"cat.jpg", "red.jpg"}
    zipped = zipfile.ZipFile(io.BytesIO(export(live, f"batches/{batch_id}", "zip").content))
    assert sorted(zipped.namelist()) == ["cat.jpg", "red.jpg"]
    assert Image.open(io.BytesIO(zipped.read("cat.jpg"))).size == photo("chelsea").size

    task_id = page[0]["task_id"]
    single = export(live, f"detections/{task_id}", "csv")
    assert 'filename="cat.csv"' in single.headers["content-disposition"]


def test_batch_from_a_zip_archive(live_stack: LiveStack) -> None:
    live = live_stack
    archive = zip_of({f"dir/img{i}.jpg": tiny_jpeg(i) for i in range(5)})
    r = post_batch(live, [("photos.zip", archive, "application/zip")])
    assert r.status_code == 202, r.text
    done = wait_batch(live, r.json()["batch_id"])
    assert done["total"] == 5 and done["counts"]["succeeded"] == 5


def test_cancel_a_queued_task_and_a_finished_one(live_stack: LiveStack) -> None:
    live = live_stack
    task_id = live.submit(tiny_jpeg(3)).json()["task_id"]
    final = live.wait_final(task_id)
    r = httpx.delete(f"{live.api_url}/api/v1/detections/{task_id}", headers=live.headers())
    assert r.status_code == 200 and r.json()["changed"] is False, r.text
    assert live.status(task_id).json()["status"] == final["status"] == "succeeded"


def test_same_idempotency_key_twice_at_once_makes_one_task(live_stack: LiveStack) -> None:
    live = live_stack
    key = {"Idempotency-Key": str(uuid.uuid4())}
    data = tiny_jpeg(5)

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{live.api_url}/api/v1/detections",
            files={"file": ("a.jpg", data, "image/jpeg")},
            headers={**live.headers(), **key},
            timeout=30,
        )

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(post, range(2))
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["task_id"] == second.json()["task_id"]
    other = httpx.post(
        f"{live.api_url}/api/v1/detections",
        files={"file": ("a.jpg", tiny_jpeg(6), "image/jpeg")},
        headers={**live.headers(), **key},
        timeout=30,
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    again = post_batch(live, [("a.jpg", data, "image/jpeg")], **key)
    assert again.status_code == 409  # the key is the client's, whatever the route


@pytest.fixture(scope="module")
def lone_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    # one key sends 1,560 files here within a minute or two; its subject is not the rate limit
    # (600 files a minute by default), which a quick machine would reach between the tests
    env = {"ML_RATE_LIMIT_PER_MINUTE": "100000"}
    with launch_stack("rabbitmq-redis", tmp_path_factory.mktemp("batch-stack"), env) as live:
        yield live


def test_cancel_a_500_item_batch_no_cancelled_item_runs_the_model(lone_worker: LiveStack) -> None:
    live = lone_worker
    archive = zip_of({f"img{i:03}.jpg": tiny_jpeg(i) for i in range(500)})
    # the worker is paused while the batch goes in (on a busy machine it would otherwise run a
    # share of the items before the cancel, however long the upload takes), and goes on just
    # before the cancel: the items it starts meanwhile run, the others must not
    worker = live.stack.procs["worker"].pid
    os.killpg(worker, signal.SIGSTOP)
    try:
        batch_id = post_batch(live, [("many.zip", archive, "application/zip")]).json()["batch_id"]
    finally:
        os.killpg(worker, signal.SIGCONT)
    r = httpx.delete(f"{live.api_url}/api/v1/batches/{batch_id}", headers=live.headers())
    assert r.status_code == 200 and r.json()["changed"] is True, r.text
    done = wait_batch(live, batch_id)
    items = batch_status(live, batch_id, limit=1000)["items"]
    cancelled = {i["task_id"] for i in items if i["status"] == "cancelled"}
    assert len(cancelled) > 400 and done["counts"]["cancelled"] == len(cancelled)
    _drain(live, items)
    ran = inferences(live)
    assert not cancelled & set(ran), sorted(cancelled & set(ran))[:5]


def _drain(live: LiveStack, items: list[dict[str, Any]]) -> None:
    """Wait until the worker has taken the last item off the queue (it marks it cancelled)."""
    last = items[-1]["task_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(f"task {last}: cancelled" in p.read_text()
               for p in live.stack.log_dir.glob("worker*.log")):  # fmt: skip
            return
        time.sleep(1)
    raise AssertionError("the worker never reached the last cancelled item")


def test_1000_images_with_the_worker_killed_halfway(lone_worker: LiveStack, tmp_path: Path) -> None:
    live = lone_worker
    names = [f"photo-{i:04}.jpg" for i in range(1000)]
    files = {name: tiny_jpeg(i) for i, name in enumerate(names)}
    files[names[0]] = encode(photo("chelsea"), quality=90)  # so the COCO export has boxes
    r = post_batch(live, [("thousand.zip", zip_of(files), "application/zip")])
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    while batch_status(live, batch_id, limit=1)["counts"]["succeeded"] < 500:
        time.sleep(1)
    live.stack.stop_process("worker", signal.SIGKILL)
    live.stack.start_worker("worker2")
    done = wait_batch(live, batch_id, timeout_s=1200)
    assert done["counts"]["succeeded"] + done["counts"]["failed"] == 1000, done["counts"]
    lines = export(live, f"batches/{batch_id}", "jsonl").text.splitlines()
    assert sorted(json.loads(x)["file_name"] for x in lines) == names
    coco_path = tmp_path / "coco.json"
    coco_path.write_bytes(export(live, f"batches/{batch_id}", "coco").content)
    from pycocotools.coco import COCO

    ground = COCO(str(coco_path))
    assert len(ground.getImgIds()) == done["counts"]["succeeded"]
    detections = ground.loadRes(ground.dataset["annotations"])
    assert detections.getAnnIds()


def owned_tasks(live: LiveStack, key_id: str) -> list[str]:
    """The task ids whose record names `key_id` as owner (straight from Redis)."""
    import redis

    client = redis.Redis.from_url(str(live.settings.result_backend), decode_responses=True)
    return [
        name for name in client.scan_iter(match="mlprod:task:*", count=1000)
        if client.hget(name, "owner") == key_id
    ]  # fmt: skip


def run_cli(live: LiveStack, key: str, *args: str, errors: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLPROD_API_KEY": key, "MLPROD_API_URL": live.api_url}
    return subprocess.Popen(
        [MLPROD, "detect", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


def test_cli_killed_and_rerun_makes_one_task_per_image(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    live = live_stack
    folder, out = tmp_path / "photos", tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    for i in range(60):
        (folder / ("sub" if i % 2 else "") / f"p{i:02}.jpg").write_bytes(tiny_jpeg(i))
    key = live.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    args = (str(folder), "--out", str(out), "--chunk", "3", "--format", "coco")
    first = run_cli(live, key, *args, errors=subprocess.DEVNULL)
    manifest = out / "mlprod-manifest.json"
    while first.poll() is None:
        if manifest.is_file() and manifest.read_text().count('"batch_id": "') >= 3:
            first.kill()  # SIGKILL: no clean-up of any kind
            break
        time.sleep(0.01)
    first.wait()
    second = run_cli(live, key, *args, "--annotated", errors=subprocess.PIPE)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    coco = json.loads((out / "results.coco.json").read_text())
    names = sorted(i["file_name"] for i in coco["images"])
    assert len(names) == 60 == len(set(names)) and "sub/p01.jpg" in names
    assert len(list((out / "annotated").rglob("*.jpg"))) == 60
    from ml_common.apikeys import ApiKeyStore

    key_id = ApiKeyStore.from_settings(live.settings).check(key)
    assert key_id is not None
    assert len(owned_tasks(live, key_id.key_id)) == 60


def test_a_single_upload_overtakes_queued_batch_items(lone_worker: LiveStack) -> None:
    """With batch items queued, a single upload runs after at most the item(s) already taken
    (RabbitMQ, queue priorities on by default)."""
    assert_overtakes(lone_worker)


def test_a_single_upload_overtakes_queued_batch_items_on_both_brokers(
    live_stack: LiveStack,
) -> None:
    """The same on each broker of the shared stacks (Valkey's transport has priority lists)."""
    assert_overtakes(live_stack)


def test_a_shared_queue_declared_by_an_earlier_version_is_taken_as_it_is(
    tmp_path: Path,
) -> None:
    """Versions before the model queues declared the shared queue without x-max-priority;
    RabbitMQ refuses a redeclaration with other arguments, so a worker and an API of this
    version must start on it as it is, and still give their model queues priorities."""
    from kombu import Connection, Queue

    shared = f"detections-old-{uuid.uuid4().hex[:8]}"
    broker = TEST_AMQP
    with Connection(broker) as conn:
        Queue(shared, channel=conn.channel(), durable=True).declare()
    env = {"ML_QUEUE_NAME": shared}
    with launch_stack("rabbitmq-redis", tmp_path, env) as live:
        task_id = live.submit(tiny_jpeg(3)).json()["task_id"]
        assert live.wait_final(task_id)["status"] == "succeeded"
        from ml_common.models import worker_queues

        model_queues = worker_queues(live.settings)[1:]
        assert model_queues and shared not in model_queues
        # a declaration with other arguments than the queue's is refused (PRECONDITION_FAILED)
        with Connection(broker) as conn:
            Queue(shared, channel=conn.channel(), durable=True).declare()
            for name in model_queues:
                priority = {"x-max-priority": 10}
                Queue(name, channel=conn.channel(), queue_arguments=priority).declare()


def assert_overtakes(live: LiveStack) -> None:
    archive = zip_of({f"q{i:02}.jpg": tiny_jpeg(i) for i in range(60)})
    batch_id = post_batch(live, [("q.zip", archive, "application/zip")]).json()["batch_id"]
    single = live.submit(tiny_jpeg(999)).json()["task_id"]
    final = live.wait_final(single)
    wait_batch(live, batch_id)
    created, started = (datetime.fromisoformat(final[k]) for k in ("created_at", "started_at"))
    ids = [i["task_id"] for i in batch_status(live, batch_id, limit=100)["items"]]
    starts = [datetime.fromisoformat(live.status(task_id).json()["started_at"]) for task_id in ids]
    queued_behind = [s for s in starts if s > created]
    jumped = [s for s in queued_behind if s < started]
    assert len(queued_behind) > 10, "the batch was finished before the single upload came"
    assert len(jumped) <= 2, f"{len(jumped)} batch items started before the single upload"


def test_the_sdk_sync_and_async(live_stack: LiveStack, tmp_path: Path) -> None:
    import asyncio

    from mlprod_client import ApiError, AsyncClient, Client

    live = live_stack
    photo_path = tmp_path / "cat.jpg"
    photo_path.write_bytes(encode(photo("chelsea"), quality=90))
    with Client(live.api_url, live.api_key) as api:
        task_id = api.detect(photo_path, idempotency_key=str(uuid.uuid4()))
        assert api.task(task_id, wait=60)["status"] == "succeeded"
        assert api.cancel(task_id)["changed"] is False
        batch_id = api.create_batch([photo_path, ("dir/red.jpg", tiny_jpeg(7))])
        done = api.wait_batch(batch_id, on_progress=lambda p: None, poll_s=0.2)
        assert done.done == 2 and done.counts["succeeded"] == 2
        names = [json.loads(line)["file_name"] for line in api.export(batch_id).splitlines()]
        assert names == ["cat.jpg", "dir/red.jpg"]
        with pytest.raises(ApiError) as refused:
            api.batch(str(uuid.uuid4()))
        assert refused.value.status == 404 and refused.value.code == "batch_not_found"

    async def use_async() -> None:
        async with AsyncClient(live.api_url, live.api_key) as api:
            task_id = await api.detect(tiny_jpeg(8), name="a.jpg")
            assert (await api.task(task_id, wait=60))["status"] == "succeeded"
            batch_id = await api.create_batch([tiny_jpeg(9), tiny_jpeg(10)])
            assert (await api.batch(batch_id)).total == 2
            assert (await api.wait_batch(batch_id, poll_s=0.2)).finished
            assert (await api.cancel_batch(batch_id))["changed"] is False
            assert b'"images"' in await api.export(batch_id, "coco")

    asyncio.run(use_async())


def test_batch_events_stream_progress_until_finished(live_stack: LiveStack) -> None:
    live = live_stack
    files = [(f"e{i}.jpg", tiny_jpeg(i), "image/jpeg") for i in range(3)]
    batch_id = post_batch(live, files).json()["batch_id"]
    events = []
    with httpx.stream("GET", f"{live.api_url}/api/v1/batches/{batch_id}/events",
                      headers=live.headers(), timeout=120) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert events and events[-1]["finished"] and events[-1]["counts"]["succeeded"] == 3
    assert events[-1]["items"] == []  # progress events carry counts only
