"""The API's side of the task queue: a Celery producer that only sends tasks."""

from __future__ import annotations

import logging

from celery import Celery
from kombu import Queue
from kombu.exceptions import KombuError, OperationalError

from ml_common.celery_config import celery_config, queue_arguments, task_priority
from ml_common.contract import DETECT_TASK, WEBHOOK_TASK, DetectPayload
from ml_common.errors import QueueUnavailable
from ml_common.models import model_queue, webhook_queue, worker_queues
from ml_common.settings import Settings
from ml_common.tracing import inject_headers

logger = logging.getLogger(__name__)


class TaskQueue:
    """Sends detect tasks; never waits on results (the API reads those from Redis itself)."""

    def __init__(self, settings: Settings) -> None:
        config = celery_config(settings)
        # No result backend here: Celery's Redis backend would subscribe to every sent task.
        config["result_backend"] = None
        self._celery = Celery("mlprod-api", set_as_current=False)
        self._celery.conf.update(config)
        # the producer declares a queue before its first message: with the worker's arguments
        self._celery.conf.task_queues = [
            Queue(name, queue_arguments=queue_arguments(settings, name))
            for name in worker_queues(settings)
        ]
        self._queue = settings.queue_name
        self._settings = settings
        self._broker = str(settings.broker_url)

    def submit(self, task_id: str, payload: DetectPayload, *, bulk: bool = False) -> None:
        """Publish the task; raises QueueUnavailable when the broker cannot take it.

        A `bulk` task (a batch item) waits behind the others: nobody is watching it."""
        try:
            self._celery.send_task(
                DETECT_TASK,
                kwargs=dict(payload),
                task_id=task_id,
                queue=model_queue(self._settings, payload["model"])
                if "model" in payload
                else self._queue,
                priority=task_priority(self._broker, bulk=bulk),
                headers=inject_headers(),  # W3C traceparent: the worker's spans join the trace
            )
        except (OperationalError, KombuError, OSError) as exc:
            logger.warning("enqueue failed: %s", exc, extra={"task_id": task_id})
            raise QueueUnavailable(
                "the task queue is unreachable right now; nothing was stored, try again shortly"
            ) from exc

    def redeliver(self, task_id: str) -> None:
        """Queue one more attempt at the task's webhook (ml_celery.webhooks)."""
        try:
            queue = webhook_queue(self._settings)
            self._celery.send_task(WEBHOOK_TASK, args=(task_id,), queue=queue)
        except (OperationalError, KombuError, OSError) as exc:
            raise QueueUnavailable("the task queue is unreachable right now") from exc

    def ping(self) -> None:
        """Raise QueueUnavailable unless the broker accepts a connection."""
        try:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except (OperationalError, KombuError, OSError) as exc:
            raise QueueUnavailable(f"broker unreachable: {exc}") from exc

    def warm(self) -> None:
        """Open the pooled broker connection now, so that the first upload does not pay for it."""
        self._celery.finalize(auto=True)
        self._celery.loader.import_default_modules()
        _ = self._celery.backend, self._celery.amqp.send_task_message  # both load lazily
        try:
            with self._celery.producer_or_acquire() as producer:
                producer.connection.ensure_connection(max_retries=1, timeout=2)
                producer.maybe_declare(self._celery.amqp.queues[self._queue])
        except (OperationalError, KombuError, OSError) as exc:
            raise QueueUnavailable(f"broker unreachable: {exc}") from exc

    def close(self) -> None:
        self._celery.close()
