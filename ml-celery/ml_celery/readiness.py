"""Worker readiness: load and warm the detector once per process, then announce it in Redis."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

import redis

from ml_celery.detectors.registry import load_detector
from ml_celery.pipeline import warm_up
from ml_common import records
from ml_common.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class ReadinessBeacon:
    """Tells the API, through Redis, that this process has its model loaded and takes tasks."""

    def __init__(self, settings: Settings) -> None:
        self._records = records.RecordStore.connect(settings)
        self.key = records.ready_key(socket.gethostname(), os.getpid())
        self._stop = threading.Event()

    def start(self) -> None:
        self._beat()
        threading.Thread(target=self._run, name="readiness-beacon", daemon=True).start()

    def _beat(self) -> None:
        try:
            self._records.announce_ready(self.key)
        except redis.RedisError as exc:
            logger.warning("readiness beacon not written: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(records.READY_TTL_S / 3):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self._records.withdraw_ready(self.key)


_beacon: ReadinessBeacon | None = None


def prepare_process() -> None:
    """Load and warm the detector in this process, then announce it as ready."""
    global _beacon
    settings = get_settings()
    detector = load_detector(settings)
    detector.warm_up()
    warm_up(settings)
    logger.info("detector %s %s loaded and warm", detector.name, detector.version)
    _beacon = ReadinessBeacon(settings)
    _beacon.start()


def announce_shutdown() -> None:
    """Withdraw this process's readiness, if it announced any."""
    if _beacon is not None:
        _beacon.stop()
