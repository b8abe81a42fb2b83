"""The one histogram of a task's time by stage, fed where each stage runs: queue wait, decode,
inference and post-process in the worker (ml_celery.metrics), annotate in the API, which draws
the image on the first GET …/image. One definition, so that both export the same buckets and
the dashboard's `sum by (le, stage)` over both may add them up."""

from __future__ import annotations

from prometheus_client import Histogram

from ml_common.schemas import StageTimings

STAGE_SECONDS = Histogram(
    "mlprod_task_stage_seconds",
    "Time a detect task spent in each stage (queue_wait: from upload to start)",
    ["model", "stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def observe_stage(model: str, stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(model, stage).observe(seconds)


def observe_timings(model: str, timings: StageTimings) -> None:
    """Each stage the timings measured (`decode_ms` is the stage "decode"); unmeasured ones
    (None) are left out."""
    for field, ms in timings.model_dump().items():
        if ms is not None:
            observe_stage(model, field.removesuffix("_ms"), ms / 1000)
