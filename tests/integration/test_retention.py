"""Retention: results expire in Redis, old files go, by the CLI and by the worker's daily task."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis

from ml_common import records
from ml_common.contract import CLEANUP_TASK
from ml_common.storage import LocalStorage
from tests.conftest import LiveStack, encode, need, photo, reachable

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
    need(reachable("localhost", 6379), "Redis is not running on localhost:6379")
    storage = LocalStorage(tmp_path)
    old = old_file(storage, 10)
    fresh_key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.write(fresh_key, b"new")
    fresh = storage.path(fresh_key)
    env = {**os.environ, "ML_STORAGE_DIR": str(tmp_path), "ML_RETENTION_DAYS": "7",
           "ML_RESULT_BACKEND": "redis://localhost:6379/6"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "ml_common.cli", "cleanup"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not old.exists() and fresh.exists()
    record_property("observed", "the 10-day-old file removed, today's kept")


def test_worker_runs_the_scheduled_cleanup_task(
    live_stack: LiveStack, record_property: Any
) -> None:
    record_property("case", "the daily clean-up task (sent by celery beat) run by a worker")
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
