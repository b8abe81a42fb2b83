"""The one Celery app of the worker, built from Settings; run it with
``celery -A ml_celery.celery_app worker``."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue

from ml_celery import metrics, readiness
from ml_celery.backend import backend_url
from ml_common.celery_config import celery_config, queue_arguments
from ml_common.contract import CLEANUP_TASK
from ml_common.logs import configure_logging, set_log_context
from ml_common.models import worker_queues
from ml_common.settings import Settings, get_settings
from ml_common.storage import check_at_start, open_storage
from ml_common.tracing import TaskSpans, setup_tracing

logger = logging.getLogger(__name__)


def create_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("mlprod", include=["ml_celery.tasks", "ml_celery.webhooks"])
    # the worker's own result backend: one round trip a state (ml_celery.backend)
    app.conf.update(
        celery_config(settings), result_backend=backend_url(str(settings.result_backend))
    )
    # a worker consumes its models' queues (and the shared one: clean-up, older tasks) unless
    # started with --queues
    app.conf.task_queues = [
        Queue(name, queue_arguments=queue_arguments(settings, name))
        for name in worker_queues(settings)
    ]
    app.conf.beat_schedule = {
        "daily-retention-cleanup": {"task": CLEANUP_TASK, "schedule": crontab(minute=17, hour=3)},
    }
    return app


app = create_celery_app()
task_spans = TaskSpans()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.json_logs)


@signals.task_prerun.connect
def _log_task(task_id: str = "", task: Any = None, **_: Any) -> None:
    set_log_context(task_id=task_id)  # every line until the task ends names it
    task_spans.start(task_id, task)


@signals.task_postrun.connect
def _log_task_end(task_id: str = "", **_: Any) -> None:
    set_log_context()
    task_spans.end(task_id)


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    setup_tracing(get_settings(), "mlprod-worker")  # after the fork: its export thread
    if not readiness.delivers_only():
        readiness.prepare_process()


@signals.worker_init.connect
def _load_without_fork(sender: Any = None, **_: Any) -> None:
    pool = str(getattr(sender, "pool_cls", "prefork")).lower()
    forks = "prefork" in pool or "processes" in pool
    if readiness.delivers_only():  # the webhook worker (ml_celery.deliveries): no model
        if not forks:  # its threads' attempts join the upload's trace
            setup_tracing(get_settings(), "mlprod-worker")
        return
    # a bad model file stops the worker here, before any process takes a task
    readiness.check_models(get_settings())
    check_at_start(open_storage(get_settings()))  # wrong credentials, no bucket: stop
    # prefork children load in worker_process_init; TensorFlow must never load in a
    # parent that forks afterwards. Pools that do not fork load here.
    metrics.start_exporter(get_settings(), pool)  # before the fork: the parent serves them
    if not forks:
        setup_tracing(get_settings(), "mlprod-worker")
        readiness.prepare_process()


@signals.worker_ready.connect
def _consumer_ready(**_: Any) -> None:
    readiness.consumer_ready()


@signals.worker_process_shutdown.connect
def _announce_shutdown(**_: Any) -> None:
    readiness.announce_shutdown()
    metrics.forget_process(get_settings())


@signals.worker_shutdown.connect
def _announce_worker_shutdown(**_: Any) -> None:
    _announce_shutdown()
