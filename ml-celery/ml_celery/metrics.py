"""Prometheus metrics of the worker: time per stage (ml_common.stagemetrics), outcomes,
failures by type, model loads.

Under the prefork pool each task runs in a child process, so a counter kept in a child's
memory would be lost with it and no single process could answer a scrape. prometheus_client's
multiprocess mode is used instead: with PROMETHEUS_MULTIPROC_DIR set (before prometheus_client
is imported: the worker's environment), every process writes its values to a file of its own
there, and the parent, which never runs a task, serves the sum of all files on
ML_WORKER_METRICS_PORT. An exporter fed by Celery events would need events switched on for
every task and a process of its own; the files cost a memory-mapped write per observation.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import signals
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)

from ml_common.models import default_model
from ml_common.schemas import DetectionResult
from ml_common.settings import Settings, get_settings
from ml_common.stagemetrics import observe_timings

logger = logging.getLogger(__name__)

TASKS = Counter(
    "mlprod_tasks",
    "Detect tasks that ended in a worker, by outcome (succeeded, failed, cancelled, retried)",
    ["model", "outcome"],
)
FAILURES = Counter(
    "mlprod_task_failures", "Detect tasks that failed, by error type", ["model", "error"]
)
MODEL_LOAD_SECONDS = Histogram(
    "mlprod_model_load_seconds",
    "Time to load and warm a model in a worker process",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def observe_result(result: DetectionResult, model: str) -> None:
    """Record a finished task's stages (the result carries them in milliseconds; annotate
    too where a result has it, though the API draws the image and times that itself)."""
    observe_timings(model, result.timings)
    TASKS.labels(model, "succeeded").inc()


def observe_outcome(model: str, outcome: str, error: BaseException | None = None) -> None:
    TASKS.labels(model, outcome).inc()
    if error is not None:
        FAILURES.labels(model, type(error).__name__).inc()


def observe_model_load(model: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model).observe(seconds)


def start_exporter(settings: Settings, pool: str) -> None:
    """In the worker's parent: serve every process's metrics on ML_WORKER_METRICS_PORT."""
    folder = settings.prometheus_multiproc_dir
    if folder is not None:  # the processes write there even when nobody serves it
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # an earlier run's processes: their pids mean nothing
            stale.unlink()
    if settings.worker_metrics_port is None:
        return
    if folder is None:
        if "prefork" in pool or "processes" in pool:
            logger.warning("PROMETHEUS_MULTIPROC_DIR is unset: the pool's metrics are not seen")
        start_http_server(settings.worker_metrics_port, registry=REGISTRY)
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    start_http_server(settings.worker_metrics_port, registry=registry)
    logger.info("worker metrics on port %d", settings.worker_metrics_port)


def forget_process(settings: Settings, pid: int | None = None) -> None:
    """A child that exits takes its live gauges with it (its counters stay in the sum)."""
    if settings.prometheus_multiproc_dir is not None:
        folder = str(settings.prometheus_multiproc_dir)
        multiprocess.mark_process_dead(pid or os.getpid(), folder)  # type: ignore[no-untyped-call]


def connect_failure_signals(task_name: str) -> None:
    """Count the detect task's failures and retries by the model they were for."""

    def model_of(kwargs: dict[str, Any] | None) -> str:
        return str((kwargs or {}).get("model") or default_model(get_settings()))

    @signals.task_failure.connect(weak=False)
    def _failed(sender: Any = None, exception: BaseException | None = None,
                kwargs: dict[str, Any] | None = None, **_: Any) -> None:  # fmt: skip
        if getattr(sender, "name", "") == task_name:
            observe_outcome(model_of(kwargs), "failed", exception)

    @signals.task_retry.connect(weak=False)
    def _retried(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
        if getattr(sender, "name", "") == task_name:
            error = reason if isinstance(reason, BaseException) else None
            observe_outcome(model_of(getattr(request, "kwargs", None)), "retried", error)
