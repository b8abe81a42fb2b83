"""The S3 storage against a real SeaweedFS: bad settings stop processes at start, a store
restart mid-work, and two worker hosts that share nothing but broker, Redis and the bucket."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ml_client import users
from ml_client.settings import ClientSettings
from ml_client.users import UserStore, bootstrap_users
from ml_common import records
from ml_common.apikeys import ApiKeyStore
from ml_common.contract import DETECT_TASK
from ml_common.errors import TaskNotFound
from ml_common.settings import Settings
from ml_common.storage import open_storage
from tests.conftest import MODEL_DIR, LiveStack, _settings_kwargs, encode, photo
from tests.seaweed import SeaweedS3

pytestmark = pytest.mark.integration
# the SeaweedFS stack of test_pipeline.py, reused
ON_S3 = pytest.mark.parametrize("live_stack", ["s3"], indirect=True, scope="session")
STARTS = {
    "api": ["-m", "uvicorn", "ml_api.app:create_app", "--factory", "--port", "0"],
    "worker": ["-m", "celery", "-A", "ml_celery.celery_app", "worker", "--pool", "solo"],
}


def _start_with(server: SeaweedS3, tmp_path: Path, process: str, **env: str) -> str:
    """Start `process` with its files in a bucket of `server`; what it said before exiting."""
    settings = {
        **server.env("mlprod-stack", "bad-start"), "ML_STORAGE_DIR": str(tmp_path),
        "ML_MODEL_DIR": str(MODEL_DIR), "ML_QUEUE_NAME": f"unused-{uuid.uuid4().hex[:6]}", **env,
    }  # fmt: skip
    done = subprocess.run([sys.executable, *STARTS[process]], env={"PATH": "/usr/bin", **settings},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0, "it started"
    return done.stdout + done.stderr


@pytest.mark.parametrize("process", ["api", "worker"])
@pytest.mark.parametrize(
    ("fault", "env", "said"),
    [
        (
            "wrong secret",
            {"ML_S3_SECRET_ACCESS_KEY": "not-the-secret"},
            "refused the S3 credentials",
        ),
        ("unknown key", {"ML_S3_ACCESS_KEY_ID": "nobody"}, "refused the S3 credentials"),
        ("missing bucket", {"ML_STORAGE_URL": "s3://no-such-bucket/x"}, "does not exist"),
    ],
)
def test_bad_storage_settings_stop_the_process_at_start(
    s3_server: SeaweedS3, tmp_path: Path, process: str, fault: str, env: dict[str, str],
    said: str, record_property: Any,
) -> None:  # fmt: skip
    record_property("case", f"the {process} started with a {fault} (S3 storage)")
    output = _start_with(s3_server, tmp_path, process, **env)
    assert said in output, output[-3000:]
    assert "storage:" in output
    line = next(line for line in output.splitlines() if said in line)
    record_property("observed", f"exits at start: {line[line.index('storage:') :][:140]}")


@ON_S3
def test_store_down_refuses_uploads_and_running_tasks_finish_after_restart(
    live_stack: LiveStack, s3_server: SeaweedS3, record_property: Any
) -> None:
    record_property("case", "the S3 store stopped and restarted while tasks wait in the worker")
    settings = live_stack.settings
    storage = open_storage(settings)
    backend = redis.Redis.from_url(str(settings.result_backend))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in ids:  # stored, then queued while the store is down
        key = storage.upload_key(task_id, "jpg")
        storage.write(key, encode(photo("chelsea")))
        record = records.TaskRecord.new(task_id, live_stack.key_id(), key)
        backend.hset(records.record_key(task_id), mapping=record.to_hash())
    s3_server.stop()
    try:
        for task_id in ids:
            key = storage.upload_key(task_id, "jpg")
            live_stack.send_task(DETECT_TASK, task_id, upload_key=key, created_at=records.now_iso())
        t0 = time.monotonic()
        r = live_stack.submit(encode(photo("coffee")))
        refused_s = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "storage_unavailable"
        assert "task_id" not in r.json()
        ready = httpx.get(f"{live_stack.api_url}/readyz", timeout=60)
        assert ready.status_code == 503
        assert "could not write a probe" in ready.json()["checks"]["storage"]
        assert settings.s3_location is not None
        assert settings.s3_location[0] not in r.text + ready.text, "names the bucket to clients"
        time.sleep(2)  # the worker meets the outage and schedules its retries
    finally:
        s3_server.start()
    finals = [live_stack.wait_final(task_id, 180) for task_id in ids]
    assert [f["status"] for f in finals] == ["succeeded"] * len(ids)
    after = live_stack.submit(encode(photo("coffee")))
    assert after.status_code == 202, after.text
    assert live_stack.wait_final(after.json()["task_id"])["status"] == "succeeded"
    record_property("observed", f"upload while down: 503 storage_unavailable after "
                    f"{refused_s:.1f}s, no task id; /readyz 503; {len(ids)}/{len(ids)} queued "
                    "tasks retried "
                    "and succeeded after the restart")  # fmt: skip


def _stored_files(folder: Path) -> list[Path]:
    return [p for kind in ("upload", "object-detection") for p in folder.glob(f"{kind}/*/*")]


@ON_S3
def test_two_worker_hosts_share_only_the_bucket(
    live_stack: LiveStack, tmp_path: Path, record_property: Any
) -> None:
    record_property("case", "two worker hosts, separate disks, sharing broker, Redis and bucket")
    stack = live_stack.stack
    disks = {"host-a": tmp_path / "host-a", "host-b": tmp_path / "host-b"}
    done: dict[str, str] = {}
    try:
        stack.stop_process("worker")
        for host in disks:
            stack.start_worker(host, ML_STORAGE_DIR=str(disks[host]))
            stack.wait_ready()
            task_id = live_stack.submit(encode(photo("chelsea"))).json()["task_id"]
            status = live_stack.wait_final(task_id)
            assert status["status"] == "succeeded", status
            done[host] = task_id
            stack.stop_process(host)
        for task_id in done.values():  # the API (a third host) draws from the bucket
            image = httpx.get(f"{live_stack.api_url}/api/v1/detections/{task_id}/image",
                              headers=live_stack.headers(), timeout=30,
                              follow_redirects=True)  # fmt: skip
            assert image.status_code == 200, image.text
    finally:
        for host in disks:
            stack.stop_process(host)
        stack.start_worker()
        stack.wait_ready()
    assert all(not _stored_files(disk) for disk in disks.values()), "a host wrote to its own disk"
    record_property("observed", "each host took a task end to end; no file on either disk; the "
                    "API drew both annotated images from the bucket")  # fmt: skip


def test_objects_are_private_and_only_built_keys_are_used(
    s3_server: SeaweedS3, tmp_path: Path, record_property: Any
) -> None:
    record_property("case", "S3 objects: anonymous reads, presigned URLs, keys not built by code")
    s3_server.create_bucket("mlprod-objects")
    env = s3_server.env("mlprod-objects", "p")
    settings = Settings(_env_file=None, storage_dir=tmp_path,
                        **{k.removeprefix("ML_").lower(): v for k, v in env.items()})  # fmt: skip
    storage = open_storage(settings)
    key = storage.upload_key(str(uuid.uuid4()), "png")
    assert not storage.exists(key)
    storage.write(key, b"png bytes")
    assert storage.exists(key)
    plain = f"{s3_server.endpoint}/mlprod-objects/p/{key}"
    assert httpx.get(plain).status_code == 403
    url = storage.presigned_url(key, 60)
    assert url is not None
    signed = httpx.get(url)
    assert signed.content == b"png bytes"
    assert signed.headers["content-type"] == "image/png"
    for bad in ("../p/x.png", f"p/{key}", "upload/today/x.png"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.read(bad)
    storage.delete(key)
    with pytest.raises(TaskNotFound):
        storage.read(key)
    record_property("observed", "anonymous GET 403; presigned GET 200 with its media type; "
                    "other keys refused unsent; a deleted one reads as not found")  # fmt: skip


def test_api_keys_live_in_the_bucket(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """Every API host sees the keys alike, and they outlive a Redis restart: in the bucket."""
    s3_server.create_bucket("mlprod-keys")
    env = s3_server.env("mlprod-keys", f"k{uuid.uuid4().hex[:6]}")
    settings = Settings(_env_file=None, storage_dir=tmp_path,
                        **{k.removeprefix("ML_").lower(): v for k, v in env.items()})  # fmt: skip
    host_a, host_b = ApiKeyStore.from_settings(settings), ApiKeyStore.from_settings(settings)
    plain, created = host_a.create("shared")
    checked = host_b.check(plain)
    assert checked is not None and checked.key_id == created.key_id
    assert not list(tmp_path.iterdir()), "the keys went to a local file"
    later_key, _ = host_a.create("later")
    assert host_b.check(later_key) is not None  # made elsewhere a moment ago: seen at once
    assert host_a.revoke("shared")
    later = ApiKeyStore.from_settings(settings)  # a fresh reader; host_b trusts its copy 5 s
    assert later.check(plain) is None


def test_web_users_live_in_the_bucket(
    s3_server: SeaweedS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two web-client hosts on one bucket see a user the other made; the first-start admin is
    made once (a conditional PUT), and nothing lands in the local folder."""
    s3_server.create_bucket("mlprod-keys")
    env = s3_server.env("mlprod-keys", f"u{uuid.uuid4().hex[:6]}")
    settings = ClientSettings(_env_file=None, storage_dir=tmp_path, **_settings_kwargs(env))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="ml_client.users"):
        bootstrap_users(settings)
        bootstrap_users(settings)
    assert [r.getMessage() for r in caplog.records if "was created" in r.getMessage()] != []
    assert len(caplog.records) == 1, "the admin was made twice"
    host_a, host_b = UserStore(settings), UserStore(settings)
    assert not host_b.verify("carol", "carol's password")
    users._add_user(settings, "carol", "carol's password")
    assert host_b.verify("carol", "carol's password")  # made on the other host: seen at once
    users._add_user(settings, "dave", "dave's password")
    assert host_a.verify("dave", "dave's password") and host_b.verify("dave", "dave's password")
    assert not host_a.verify("dave", "carol's password")
    restarted = UserStore(settings)  # a new process: nothing of it is kept in Redis or locally
    assert restarted.verify("carol", "carol's password")
    assert not list(tmp_path.iterdir()), "the users went to a local file"
