"""The one Celery app of the worker, built from Settings; run it with
``celery -A ml_celery.celery_app worker``."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import redis
from celery import Celery, signals
from celery.schedules import crontab

from ml_common.celery_config import celery_config
from ml_common.logs import configure_logging
from ml_common.settings import Settings, get_settings
from ml_common.tasks import CLEANUP_TASK

logger = logging.getLogger(__name__)

READY_PREFIX = "mlprod:ready:"
READY_TTL_S = 30


def create_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("mlprod", include=["ml_celery.tasks"])
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = {
        "daily-retention-cleanup": {"task": CLEANUP_TASK, "schedule": crontab(minute=17, hour=3)},
    }
    return app


app = create_celery_app()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(get_settings().log_level)


class ReadinessBeacon:
    """Tells the API, through Redis, that this process has its model loaded and takes tasks."""

    def __init__(self, settings: Settings) -> None:
        self._redis = redis.Redis.from_url(str(settings.result_backend), socket_timeout=5)
        self.key = f"{READY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()

    def start(self) -> None:
        self._beat()
        threading.Thread(target=self._run, name="readiness-beacon", daemon=True).start()

    def _beat(self) -> None:
        try:
            self._redis.set(self.key, "ready", ex=READY_TTL_S)
        except redis.RedisError as exc:
            logger.warning("readiness beacon not written: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(READY_TTL_S / 3):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(self.key)


_beacon: ReadinessBeacon | None = None


def prepare_process() -> None:
    """Load and warm the detector in this process, then announce it as ready."""
    global _beacon
    from ml_celery.detectors.registry import load_detector
    from ml_celery.tasks import warm_up

    settings = get_settings()
    detector = load_detector(settings)
    detector.warm_up()
    warm_up(settings)
    logger.info("detector %s %s loaded and warm", detector.name, detector.version)
    _beacon = ReadinessBeacon(settings)
    _beacon.start()


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    prepare_process()


@signals.worker_init.connect
def _load_without_fork(sender: Any = None, **_: Any) -> None:
    # prefork children load in worker_process_init; TensorFlow must never load in a
    # parent that forks afterwards. Pools that do not fork load here.
    pool = str(getattr(sender, "pool_cls", "prefork")).lower()
    if "prefork" not in pool and "processes" not in pool:
        prepare_process()


@signals.worker_process_shutdown.connect
def _announce_shutdown(**_: Any) -> None:
    if _beacon is not None:
        _beacon.stop()


@signals.worker_shutdown.connect
def _announce_worker_shutdown(**_: Any) -> None:
    _announce_shutdown()
