"""The worker's one-round-trip writes on a real Redis: the start of a task (started_at, Celery's
STARTED meta, the cancel check) and `LeanRedisBackend`, which must store exactly what Celery's
own Redis backend stores, and never overwrite a task that already succeeded."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, states

from ml_celery.backend import LeanRedisBackend, backend_url, state_meta
from ml_common.celery_config import celery_config
from ml_common.records import CANCELLED_AT, STARTED_AT, TaskRecord, meta_key, record_key
from ml_common.settings import Settings
from ml_common.taskstore import RecordStore
from tests.conftest import need_redis, redis_db

pytestmark = pytest.mark.integration
URL = redis_db(9)
RESULT = {"width": 640, "detections": [{"label": "person", "score": 0.9}]}


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    need_redis()
    client = redis.Redis.from_url(URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def celery_app(lean: bool, **conf: Any) -> Celery:
    settings = Settings(_env_file=None, result_backend=URL)  # type: ignore[arg-type]
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(settings), **conf)
    if lean:
        app.conf.update(result_backend=backend_url(URL))
    return app


def new_task(client: redis.Redis, cancelled: bool = False) -> str:
    record = TaskRecord.new(str(uuid.uuid4()), "owner", "upload/x.jpg")
    client.hset(record_key(record.task_id), mapping=record.to_hash())
    if cancelled:
        client.hset(record_key(record.task_id), CANCELLED_AT, "2026-01-01T00:00:00+00:00")
    return record.task_id


def test_the_worker_uses_the_lean_backend_on_the_same_redis() -> None:
    backend = celery_app(lean=True).backend
    assert isinstance(backend, LeanRedisBackend)
    assert backend.connparams["db"] == 9


def test_start_stores_started_after_started_at_and_publishes_it(client: redis.Redis) -> None:
    task_id = new_task(client)
    backend = celery_app(lean=True).backend
    started = state_meta(backend, task_id, {"pid": 1, "hostname": "w@h"}, states.STARTED)
    listener = client.pubsub()
    listener.subscribe(meta_key(task_id))
    assert listener.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]

    assert RecordStore(client).start(task_id, started, 600) is False

    message = listener.get_message(timeout=2)
    assert message is not None and json.loads(message["data"])["status"] == "STARTED"
    assert client.get(meta_key(task_id)) == started
    assert 0 < client.ttl(meta_key(task_id)) <= 600
    assert client.hget(record_key(task_id), STARTED_AT)
    listener.close()


def test_start_reports_a_cancel_mark(client: redis.Redis) -> None:
    task_id = new_task(client, cancelled=True)
    started = state_meta(celery_app(lean=True).backend, task_id, {}, states.STARTED)
    assert RecordStore(client).start(task_id, started, 600) is True


@pytest.mark.parametrize("state", [states.SUCCESS, states.FAILURE, states.RETRY])
def test_lean_backend_stores_what_celerys_own_stores(client: redis.Redis, state: str) -> None:
    """The same meta (date_done aside) and the same expiry, FAILURE's own included."""
    result: Any = RESULT if state == states.SUCCESS else ValueError("bad image")
    stored = {}
    for lean in (False, True):
        app = celery_app(lean, result_expires=3600, result_failure_expires=60)
        task_id = str(uuid.uuid4())
        app.backend.store_result(task_id, result, state, traceback="tb" * (state != states.SUCCESS))
        meta = json.loads(client.get(meta_key(task_id)) or "{}")
        meta.pop("date_done")
        meta["task_id"] = "-"
        stored[lean] = (meta, client.ttl(meta_key(task_id)) > 60)
    assert stored[True] == stored[False]
    assert stored[True][1] == (state != states.FAILURE)  # result_failure_expires


def test_a_task_that_succeeded_is_never_overwritten(client: redis.Redis) -> None:
    """A redelivered task (its worker lost after storing the result) starts again, or fails:
    the result stays."""
    task_id = new_task(client)
    backend = celery_app(lean=True).backend
    backend.store_result(task_id, RESULT, states.SUCCESS)
    done = client.get(meta_key(task_id))

    started = state_meta(backend, task_id, {}, states.STARTED)
    RecordStore(client).start(task_id, started, 600)
    backend.store_result(task_id, ValueError("late"), states.FAILURE)
    assert client.get(meta_key(task_id)) == done
    assert backend.get_task_meta(task_id)["result"] == RESULT
