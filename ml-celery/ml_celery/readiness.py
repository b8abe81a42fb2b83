"""Worker readiness: load and warm each served model once per process, then announce it in Redis
once the worker's consumer is on its queues (a warm model in a process that takes no task yet,
while the worker still connects or meets its neighbours, is not ready).

A model whose files are missing, corrupt or of the wrong shape stops the worker at its start
(`check_models`, in the parent, before any process takes a task), with the file named."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time

import redis

from ml_celery import metrics
from ml_celery.detectors.base import Detector
from ml_celery.detectors.manifest import read_manifest
from ml_celery.detectors.registry import build_detector, load_detector
from ml_celery.pipeline import warm_up
from ml_common import records
from ml_common.errors import DetectorUnavailable
from ml_common.models import model_folder, served_models
from ml_common.settings import Settings, get_settings
from ml_common.taskstore import RecordStore

logger = logging.getLogger(__name__)

# Set in the worker's parent process when its consumer takes tasks (Celery's worker_ready);
# made here, before the pool forks, so that every pool process, a replacement forked later
# included, waits on the same one.
_consuming = multiprocessing.Event()


# Set in a worker's parent (before any fork) when it consumes webhook deliveries only
_delivering_only = False


def deliver_only() -> None:
    """This worker delivers webhooks only: its processes load no model and announce none."""
    global _delivering_only
    _delivering_only = True


def delivers_only() -> bool:
    return _delivering_only


def consumer_ready() -> None:
    """The worker's consumer is on its queues: its processes may now announce their models."""
    _consuming.set()


class ReadinessBeacon:
    """Tells the API, through Redis, that this process has its model loaded and takes tasks."""

    def __init__(self, settings: Settings, detectors: list[Detector]) -> None:
        self._records = RecordStore.connect(settings)
        host, pid = socket.gethostname(), os.getpid()
        self.beacons = {
            records.ready_key(host, pid, d.name): records.ReadyModel(d.name, d.version).to_json()
            for d in detectors
        }
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="readiness-beacon", daemon=True).start()

    def _beat(self) -> None:
        try:
            for key, value in self.beacons.items():
                self._records.announce_ready(key, value)
        except redis.RedisError as exc:
            logger.warning("readiness beacon not written: %s", exc)

    def _run(self) -> None:
        while not _consuming.wait(0.5):
            if self._stop.is_set():
                return
        self._beat()
        while not self._stop.wait(records.READY_TTL_S / 3):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            for key in self.beacons:
                self._records.withdraw_ready(key)


_beacon: ReadinessBeacon | None = None


def check_models(settings: Settings) -> None:
    """Make sure every served model's files are there and sound, or stop the worker with a
    message naming the file. Runtimes other than TensorFlow load the model to check it
    (and drop it: the processes load their own); TensorFlow never loads in a parent."""
    for model in served_models(settings):
        try:
            manifest = read_manifest(model, model_folder(settings, model), settings)
            if manifest.format in ("yolox_onnx", "tflite_ssd") or (
                manifest.format == "nanodet" and settings.runtime == "tflite"
            ):
                build_detector(settings, model)
        except DetectorUnavailable as exc:
            logger.critical("model %s cannot be served: %s", model, exc.detail)
            raise SystemExit(f"model {model} cannot be served: {exc.detail}") from exc


def prepare_process() -> None:
    """Load and warm every served model in this process; they are announced as ready once the
    worker's consumer is on its queues."""
    global _beacon
    settings = get_settings()
    detectors = []
    for model in served_models(settings):
        started = time.perf_counter()
        detector = load_detector(settings, model)
        detector.warm_up()
        warm_up(settings, model)
        metrics.observe_model_load(model, time.perf_counter() - started)
        logger.info("model %s %s loaded and warm", detector.name, detector.version)
        detectors.append(detector)
    _beacon = ReadinessBeacon(settings, detectors)
    _beacon.start()


def announce_shutdown() -> None:
    """Withdraw this process's readiness, if it announced any."""
    if _beacon is not None:
        _beacon.stop()
