"""Retention: results expire in Redis, old files go, by the CLI and by the worker's daily task."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis

from ml_common import records
from ml_common.contract import CLEANUP_TASK
from ml_common.errors import TaskNotFound
from ml_common.retention import remove_orphan_uploads
from ml_common.settings import Settings
from ml_common.storage import LocalStorage, open_storage
from tests.conftest import (
    MLPROD,
    LiveStack,
    encode,
    need_redis,
    photo,
    redis_db,
    skip_on_bucket,
)
from tests.seaweed import SeaweedS3

pytestmark = pytest.mark.integration


def old_file(storage: LocalStorage, days: int) -> Path:
    key = storage.upload_key(str(uuid.uuid4()), "jpg", date(2026, 1, 1))
    storage.write(storage.annotated_key(key, "jpg"), b"old")
    path = storage.path(storage.annotated_key(key, "jpg"))
    then = time.time() - days * 86400
    os.utime(path, (then, then))
    return path


def test_cli_cleanup_removes_files_past_retention(tmp_path: Path, record_property: Any) -> None:
    record_property("case", "`mlprod cleanup` with files older than ML_RETENTION_DAYS")
    need_redis()
    storage = LocalStorage(tmp_path)
    old = old_file(storage, 10)
    fresh_key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.write(fresh_key, b"new")
    fresh = storage.path(fresh_key)
    env = {**os.environ, "ML_STORAGE_DIR": str(tmp_path), "ML_RETENTION_DAYS": "7",
           "ML_RESULT_BACKEND": redis_db(6)}  # fmt: skip
    done = subprocess.run([MLPROD, "cleanup"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not old.exists() and fresh.exists()
    record_property("observed", "the 10-day-old file removed, today's kept")


def test_worker_runs_the_scheduled_cleanup_task(
    live_stack: LiveStack, record_property: Any
) -> None:
    record_property("case", "the daily clean-up task (sent by celery beat) run by a worker")
    skip_on_bucket(
        live_stack.settings,
        "an object cannot be backdated (the store dates it); "
        "test_expired_files_go_and_newer_stay_on_each_store expires the bucket's",
    )
    storage = LocalStorage(live_stack.settings.storage_dir)
    old = old_file(storage, live_stack.settings.retention_days + 1)
    live_stack.send_task(CLEANUP_TASK)
    deadline = time.monotonic() + 60
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not old.exists()
    from ml_celery.celery_app import create_celery_app

    schedule = create_celery_app(live_stack.settings).conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} == {CLEANUP_TASK}
    record_property("observed", "expired file removed by the worker; beat schedules it daily")


@pytest.fixture(scope="module", params=["local", "s3"])
def store_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings whose files live in a folder or in a SeaweedFS bucket (and Redis db 6)."""
    need_redis()
    kwargs: dict[str, Any] = {"storage_dir": tmp_path_factory.mktemp("retention")}
    if request.param == "s3":
        server: SeaweedS3 = request.getfixturevalue("s3_server")
        server.create_bucket("mlprod-retention")
        env = server.env("mlprod-retention", f"r{uuid.uuid4().hex[:6]}")
        kwargs |= {k.removeprefix("ML_").lower(): v for k, v in env.items()}
    return Settings(_env_file=None, result_backend=redis_db(6), **kwargs)


def test_expired_files_go_and_newer_stay_on_each_store(
    store_settings: Settings, record_property: Any
) -> None:
    record_property("case", "retention clean-up on the folder and on the bucket (by day prefix)")
    storage = open_storage(store_settings)
    old, new = (storage.upload_key(str(uuid.uuid4()), "jpg") for _ in range(2))
    storage.write(old, b"old")
    storage.write(storage.annotated_key(old, "jpg"), b"drawn")
    time.sleep(1.2)  # S3 times objects to the second
    cutoff = time.time()
    time.sleep(1.2)
    storage.write(new, b"new")
    # as if run `days` later than `cutoff`: what was written before it has expired
    assert storage.purge_older_than(3, now=cutoff + 3 * 86400) == 2
    assert [key for key, _ in storage.uploads()] == [new]
    with pytest.raises(TaskNotFound):
        storage.read(old)
    assert storage.read(new) == b"new"
    storage.delete(new)
    record_property("observed", "the upload and its annotated image removed, the newer kept")


def test_orphan_uploads_go_on_each_store(store_settings: Settings, record_property: Any) -> None:
    record_property("case", "orphan uploads (never queued) removed from the folder and the bucket")
    storage = open_storage(store_settings)
    client = redis.Redis.from_url(str(store_settings.result_backend))
    ids = {name: str(uuid.uuid4()) for name in ("never-queued", "no-record", "queued")}
    for name, task_id in ids.items():
        key = storage.upload_key(task_id, "jpg")
        storage.write(key, b"x")
        if name != "no-record":
            record = replace(records.TaskRecord.new(task_id, "k", key), queued=name == "queued")
            client.hset(records.record_key(task_id), mapping=record.to_hash())
    try:
        assert remove_orphan_uploads(store_settings, grace_s=0) == 2
        assert [storage.parse(key)[2] for key, _ in storage.uploads()] == [ids["queued"]]
    finally:
        for task_id in ids.values():
            client.delete(records.record_key(task_id))
        storage.delete(storage.upload_key(ids["queued"], "jpg"))
    record_property("observed", "never-queued and record-less uploads removed, the queued kept")


def test_results_and_records_expire_in_redis(live_stack: LiveStack, record_property: Any) -> None:
    record_property("case", "task result and record in Redis")
    task_id = live_stack.submit(encode(photo("coffee"))).json()["task_id"]
    assert live_stack.wait_final(task_id)["status"] == "succeeded"
    client = redis.Redis.from_url(str(live_stack.settings.result_backend))
    expires = live_stack.settings.result_expires_s
    for key in (records.record_key(task_id), records.meta_key(task_id)):
        ttl = client.ttl(key)
        assert 0 < ttl <= expires, (key, ttl)
    record_property("observed", f"both carry a TTL of ML_RESULT_EXPIRES_S ({expires} s)")
