"""The webhook worker's app: the one Celery app, consuming the deliveries' queue only.

Run it with ``celery -A ml_celery.deliveries worker --pool threads --concurrency 8``: its
threads wait on receivers, never on a model (it loads none), and no detection waits behind it.
"""

from __future__ import annotations

from kombu import Queue

from ml_celery import readiness
from ml_celery.celery_app import app
from ml_common.models import webhook_queue
from ml_common.settings import get_settings

readiness.deliver_only()
app.conf.task_queues = [Queue(webhook_queue(get_settings()))]

__all__ = ["app"]
