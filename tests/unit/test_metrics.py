"""Prometheus metrics: the API's request metrics and scrape-time collector (on the embedded
Valkey as broker and result store), the worker's task metrics and its exporter."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ml_api.app import create_app
from ml_api.metrics import OperationsCollector
from ml_celery import metrics as worker_metrics
from ml_common.apikeys import ApiKeyStore
from ml_common.contract import DETECT_TASK
from ml_common.records import ReadyModel, ready_key
from ml_common.schemas import DetectionResult, StageTimings
from ml_common.settings import Settings
from ml_tools.ports import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def valkey_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None, detector="fake", storage_dir=tmp_path, broker_url=redis_url,
        result_backend=redis_url, queue_name=f"q{time.monotonic_ns()}", queue_stats_cache_s=0,
    )  # fmt: skip


def test_requests_are_counted_by_route_template_and_uploads_by_bytes(
    valkey_settings: Settings,
) -> None:
    with TestClient(create_app(valkey_settings)) as client:  # the lifespan opens the queue
        task = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
        before = client.get("/metrics").text
        client.get(f"/api/v1/detections/{task}")
        client.get("/no/such/path")
        plain, _ = ApiKeyStore.from_settings(valkey_settings).create("metrics")
        auth = {"Authorization": f"Bearer {plain}"}  # without a key the body is never read
        client.post("/api/v1/detections", files={"file": ("a.jpg", b"x" * 5000)}, headers=auth)
        after = client.get("/metrics").text
        route = "/api/v1/detections/{task_id}"
        counted = value(
            after, "mlprod_http_requests_total", method="GET", route=route, status="401"
        )
        assert counted == (value(before, "mlprod_http_requests_total", method="GET", route=route,
                                 status="401") or 0) + 1  # fmt: skip
        assert value(after, "mlprod_http_requests_total", method="GET", route="unmatched",
                     status="404")  # fmt: skip
        assert task not in after
        uploaded = value(after, "mlprod_upload_bytes_sum", route="/api/v1/detections") or 0
        assert uploaded - (value(before, "mlprod_upload_bytes_sum", route="/api/v1/detections")
                           or 0) > 5000  # fmt: skip


def test_with_a_metrics_token_only_a_scrape_that_sends_it_is_answered(
    valkey_settings: Settings,
) -> None:
    token = "metrics-token-for-the-test"
    settings = valkey_settings.model_copy(update={"metrics_token": SecretStr(token)})
    client = TestClient(create_app(settings))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": f"Bearer {token}x"}):  # fmt: skip
        r = client.get("/metrics", headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, "not_authenticated"), headers
        assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert "mlprod_result_store_up" in r.text


def test_the_scrape_reads_queue_depth_age_and_ready_processes(
    valkey_settings: Settings,
) -> None:
    producer = Celery(set_as_current=False, broker=str(valkey_settings.broker_url))
    created = datetime(2024, 1, 1, tzinfo=timezone.utc).isoformat()
    for _ in range(3):
        producer.send_task(DETECT_TASK, kwargs={"upload_key": "k", "created_at": created},
                           queue=valkey_settings.queue_name)  # fmt: skip
    model = ReadyModel("nanodet-g-416", "1")
    with redis.Redis.from_url(str(valkey_settings.result_backend)) as client:
        client.set(ready_key("host", 1, model.model), model.to_json(), ex=30)
        client.set(ready_key("host", 2, model.model), model.to_json(), ex=30)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector(valkey_settings))
    text = generate_latest(registry).decode()
    queue = valkey_settings.queue_name
    assert value(text, "mlprod_queue_depth", queue=queue) == 3
    assert (value(text, "mlprod_queue_oldest_age_seconds", queue=queue) or 0) > 24 * 3600
    assert value(text, "mlprod_ready_processes", model="nanodet-g-416") == 2
    assert value(text, "mlprod_broker_up") == value(text, "mlprod_result_store_up") == 1


def test_a_broker_and_result_store_that_are_down_read_as_down(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(_env_file=None, storage_dir=tmp_path, broker_url=closed,
                        result_backend=closed, enqueue_timeout_s=0.5)  # fmt: skip
    collector = OperationsCollector(settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert value(text, "mlprod_broker_up") == 0
    assert value(text, "mlprod_result_store_up") == 0
    assert collector.queues() is None  # cached: the broker is not asked again at once
    collector.close()


def _result() -> DetectionResult:
    timings = StageTimings(decode_ms=12.0, inference_ms=40.0, postprocess_ms=3.0, annotate_ms=25.0)
    timings.queue_wait_ms = 1500.0
    return DetectionResult(width=10, height=10, model_name="m", model_version="1",
                           inference_ms=40.0, detections=[], timings=timings)  # fmt: skip


def _scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_the_worker_times_each_stage_and_counts_outcomes(tmp_path: Path) -> None:
    port = free_port()
    worker_metrics.start_exporter(Settings(_env_file=None, worker_metrics_port=port), "solo")
    model = f"m{time.monotonic_ns()}"
    worker_metrics.observe_result(_result(), model)
    worker_metrics.observe_outcome(model, "failed", ValueError("bad"))
    worker_metrics.observe_model_load(model, 2.5)
    text = _scrape(port)
    assert value(text, "mlprod_task_stage_seconds_sum", model=model, stage="queue_wait") == 1.5
    assert value(text, "mlprod_task_stage_seconds_count", model=model, stage="inference") == 1
    assert value(text, "mlprod_task_stage_seconds_sum", model=model, stage="annotate") == 0.025
    assert value(text, "mlprod_tasks_total", model=model, outcome="succeeded") == 1
    assert value(text, "mlprod_task_failures_total", model=model, error="ValueError") == 1
    assert value(text, "mlprod_model_load_seconds_sum", model=model) == 2.5


def test_the_prefork_exporter_serves_the_files_of_the_processes(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"")  # an earlier run's: removed at start
    port = free_port()
    settings = Settings(_env_file=None, worker_metrics_port=port,
                        prometheus_multiproc_dir=folder)  # fmt: skip
    worker_metrics.start_exporter(settings, "prefork")
    assert not list(folder.glob("*.db"))
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    worker_metrics.forget_process(settings, 999999)


def test_without_a_port_the_folder_is_still_made_for_the_processes(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    settings = Settings(_env_file=None, prometheus_multiproc_dir=folder)
    worker_metrics.start_exporter(settings, "prefork")
    assert folder.is_dir()
