"""Prometheus against the real stack: Debian's `prometheus` scrapes the API and a prefork
worker, a PromQL query counts the tasks this test sent, and every metric that the dashboard
and the alert rules use is there."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import yaml
from celery import Celery
from kombu import Connection, Queue

from ml_api.queuestats import queue_stats
from ml_common.contract import DETECT_TASK
from ml_tools.devstack import wait_http
from ml_tools.ports import free_port
from tests.conftest import (
    TEST_AMQP,
    LiveStack,
    launch_stack,
    need,
    need_rabbitmq,
    need_redis,
    redis_db,
    storage_independent,
)
from tests.unit.test_ops_files import DEPLOY, dashboard_expressions, used_metrics

ROOT = DEPLOY.parent

pytestmark = [pytest.mark.integration, storage_independent("metrics and alert rules")]

TASKS_SENT = 3
PROMETHEUS_WAIT_S = 120
METRICS_TOKEN = "metrics-token-of-the-test"


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveStack, int]]:
    """The real stack on RabbitMQ + Redis, its worker with two prefork processes; the API's
    /metrics asks for a token."""
    port = free_port()
    base = tmp_path_factory.mktemp("metrics-stack")
    env = {"ML_WORKER_METRICS_PORT": str(port), "ML_LOG_FORMAT": "json",
           "ML_METRICS_TOKEN": METRICS_TOKEN}  # fmt: skip
    with launch_stack("rabbitmq-redis", base, env, concurrency=2) as live:
        yield live, port


@pytest.fixture(scope="module")
def prometheus(
    metrics_stack: tuple[LiveStack, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus scraping the API (with the token, from a file as
    deploy/prometheus/prometheus.yml shows) and the worker every second, with our rules."""
    binary = shutil.which("prometheus")
    need(binary is not None, "no `prometheus` binary: apt-get install prometheus")
    assert binary is not None
    live, worker_port = metrics_stack
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", folder / "alerts.yml")
    (folder / "metrics-token").write_text(METRICS_TOKEN + "\n")
    api = live.api_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "mlprod-api",
                "authorization": {"credentials_file": str(folder / "metrics-token")},
                "static_configs": [{"targets": [api]}],
            },
            {
                "job_name": "mlprod-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
            },
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", 60, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def value_of(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def eventually(
    prometheus: str, promql: str, expected: float | Callable[[float | None], bool]
) -> float | None:
    """The query's value once it equals `expected` (or `expected(value)` holds), or its last
    value after the wait."""
    done = expected if callable(expected) else lambda value: value == expected
    deadline = time.monotonic() + PROMETHEUS_WAIT_S
    value = value_of(prometheus, promql)
    while not done(value) and time.monotonic() < deadline:
        time.sleep(1)
        value = value_of(prometheus, promql)
    return value


@pytest.fixture(scope="module")
def sent(metrics_stack: tuple[LiveStack, int], astronaut_jpeg: bytes) -> list[str]:
    """TASKS_SENT photos through the API, each waited for, and one task that fails."""
    live, _ = metrics_stack
    task_ids = []
    for _ in range(TASKS_SENT):
        r = live.submit(astronaut_jpeg)
        assert r.status_code == 202, r.text
        task_ids.append(r.json()["task_id"])
    for task_id in task_ids:
        assert live.wait_final(task_id)["status"] == "succeeded"
        image = httpx.get(f"{live.api_url}/api/v1/detections/{task_id}/image",
                          headers=live.headers(), timeout=30)  # fmt: skip
        assert image.status_code == 200, image.text  # drawn now: the API times "annotate"
    missing = f"upload/2020-01-01/{uuid.uuid4()}.jpg"  # no such file: fails at once
    created = datetime.now(timezone.utc).isoformat()
    failing = str(uuid.uuid4())
    live.send_task(DETECT_TASK, failing, upload_key=missing, created_at=created)
    return task_ids


def test_the_apis_metrics_ask_for_the_token(metrics_stack: tuple[LiveStack, int]) -> None:
    """Prometheus reads them with it (every query below); anyone else gets 401."""
    url = f"{metrics_stack[0].api_url}/metrics"
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        assert httpx.get(url, headers=headers, timeout=10).status_code == 401
    r = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert r.status_code == 200 and "mlprod_http_requests_total" in r.text


def test_promql_counts_the_tasks_this_test_sent(prometheus: str, sent: list[str]) -> None:
    succeeded = eventually(prometheus, 'sum(mlprod_tasks_total{outcome="succeeded"})', len(sent))
    assert succeeded == len(sent)
    accepted = 'sum(mlprod_http_requests_total{route="/api/v1/detections",status="202"})'
    assert eventually(prometheus, accepted, len(sent)) == len(sent)
    failed = eventually(prometheus, 'sum(mlprod_task_failures_total{error="TaskNotFound"})', 1)
    assert failed == 1


STAGES = ("queue_wait", "decode", "inference", "postprocess", "annotate")


def test_each_stage_is_timed_once_per_task(prometheus: str, sent: list[str]) -> None:
    """The worker's four stages, and annotate from the API (each image drawn once)."""
    for stage in STAGES:
        promql = f'sum(mlprod_task_stage_seconds_count{{stage="{stage}"}})'
        assert eventually(prometheus, promql, len(sent)) == len(sent), stage


def test_the_dashboards_stage_panel_shows_every_stage(prometheus: str, sent: list[str]) -> None:
    (expr,) = [e for e in dashboard_expressions() if "mlprod_task_stage_seconds" in e]
    eventually(prometheus, 'sum(mlprod_task_stage_seconds_count{stage="annotate"})', len(sent))
    # the panel's rate() needs two scrapes of a series: the annotate one (drawn by the API on
    # the fixture's last requests) may have had only one yet
    deadline = time.monotonic() + PROMETHEUS_WAIT_S
    shown: set[str | None] = set()
    while shown != set(STAGES) and time.monotonic() < deadline:
        shown = {series["metric"].get("stage") for series in query(prometheus, expr)}
        time.sleep(0.5)
    assert shown == set(STAGES)


def test_both_prefork_processes_report_their_model_load(prometheus: str) -> None:
    assert eventually(prometheus, "sum(mlprod_model_load_seconds_count)", 2) == 2
    # the Redis is shared with any other stack running now: at least this worker's two
    ready = eventually(prometheus, "sum(mlprod_ready_processes)", lambda v: (v or 0) >= 2)
    assert ready is not None and ready >= 2


def test_every_metric_of_the_dashboard_and_rules_is_scraped(
    prometheus: str, sent: list[str]
) -> None:
    eventually(prometheus, "sum(mlprod_task_failures_total)", 1)
    missing = [
        name for name in sorted(used_metrics())
        if not query(prometheus, f'count({{__name__="{name}"}})')
    ]  # fmt: skip
    assert not missing, f"used by deploy/ but not exported: {missing}"


def test_worker_and_api_log_json_lines_naming_the_task(
    metrics_stack: tuple[LiveStack, int], sent: list[str]
) -> None:
    """ML_LOG_FORMAT=json: each line about a task is JSON with its task_id."""
    live, _ = metrics_stack
    for name in ("worker", "api"):
        lines = (live.stack.log_dir / f"{name}.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records, name
        for task_id in sent:
            about = [r for r in records if task_id in r["msg"]]
            assert about, (name, task_id)
            assert all(r.get("task_id") == task_id for r in about), about


def test_the_dashboard_renders_from_the_live_prometheus(prometheus: str, sent: list[str]) -> None:
    """A Grafana-free render of the dashboard's queries (the README's screenshot)."""
    eventually(prometheus, 'sum(mlprod_tasks_total{outcome="succeeded"})', len(sent))
    spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "scripts" /
                                                  "render_dashboard.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = ROOT / "test-artifacts" / "dashboard.png"
    out.parent.mkdir(exist_ok=True)
    drawn = module.render(prometheus, out, minutes=3)
    assert drawn >= 10
    assert out.stat().st_size > 10_000


def test_the_alert_rules_load_and_none_fires_on_a_healthy_stack(
    prometheus: str, sent: list[str]
) -> None:
    r = httpx.get(f"{prometheus}/api/v1/rules", timeout=10)
    rules = [rule for group in r.json()["data"]["groups"] for rule in group["rules"]]
    assert len(rules) == len(yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
                             ["groups"][0]["rules"])  # fmt: skip
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
    firing = [rule["name"] for rule in rules if rule.get("state") == "firing"]
    assert not firing


@pytest.mark.parametrize("broker", [TEST_AMQP, redis_db(11)], ids=["rabbitmq", "redis"])
def test_queue_depth_and_age_come_from_the_broker(broker: str) -> None:
    """Two waiting tasks, the oldest queued in 2020: depth 2, age over five years, and
    reading them twice finds them still there (the peek takes nothing)."""
    need_rabbitmq() if broker.startswith("amqp") else need_redis()
    queue = f"stats-test-{uuid.uuid4().hex[:8]}"
    producer = Celery(set_as_current=False, broker=broker)
    for year in (2020, 2021):
        created = datetime(year, 1, 1, tzinfo=timezone.utc).isoformat()
        producer.send_task(DETECT_TASK, kwargs={"upload_key": "x", "created_at": created},
                           queue=queue)  # fmt: skip
    try:
        for _ in range(2):
            (stats,) = queue_stats(broker, [queue], 3)
            assert stats.depth == 2
            assert stats.oldest_age_s > 5 * 365 * 24 * 3600
        assert queue_stats(broker, [f"{queue}-never-declared"], 3)[0].depth == 0
    finally:
        with Connection(broker) as conn:
            Queue(queue, channel=conn.channel()).delete()
