from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ml_api.results import build_status
from ml_common.records import TaskRecord
from ml_common.schemas import TaskState

TID = "7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f"
RECORD = TaskRecord(TID, "k", "upload/x.jpg", datetime.fromisoformat("2026-11-27T10:00:00+00:00"))


def test_no_meta_yet_is_queued() -> None:
    status = build_status(RECORD, None)
    assert status.status is TaskState.queued
    assert status.links.image == f"/api/v1/detections/{TID}/image"


def test_started() -> None:
    record = replace(RECORD, started_at=datetime.fromisoformat("2026-11-27T10:00:01+00:00"))
    status = build_status(record, {"status": "STARTED", "result": {"pid": 1}})
    assert status.status is TaskState.started
    assert status.started_at is not None and status.finished_at is None


def test_a_cancel_before_the_worker_took_it_stays_cancelled_while_it_starts() -> None:
    at = datetime.fromisoformat
    cancelled = replace(RECORD, cancelled_at=at("2026-11-27T10:00:01+00:00"))
    assert build_status(cancelled, None).status is TaskState.cancelled
    taken_after = replace(cancelled, started_at=at("2026-11-27T10:00:02+00:00"))
    assert build_status(taken_after, {"status": "STARTED"}).status is TaskState.cancelled
    running_before = replace(cancelled, started_at=at("2026-11-27T10:00:00.500000+00:00"))
    assert build_status(running_before, {"status": "STARTED"}).status is TaskState.started


def test_failure_is_readable() -> None:
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": "InvalidImage", "exc_message": ["the image is truncated"]},
        "date_done": "2026-11-27T10:00:02+00:00",
    }
    status = build_status(RECORD, meta)
    assert status.status is TaskState.failed
    assert status.error is not None
    assert (status.error.type, status.error.message) == ("InvalidImage", "the image is truncated")
    assert status.finished_at is not None


def test_success_carries_the_result() -> None:
    det = {
        "label": "person",
        "class_id": 0,
        "score": 0.9,
        "box": {"x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
        "box_normalized": {"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4},
    }
    result = {"width": 10, "height": 10, "model_name": "m", "model_version": "1",
              "inference_ms": 5.0, "detections": [det]}  # fmt: skip
    status = build_status(RECORD, {"status": "SUCCESS", "result": result,
                                        "date_done": "2026-11-27T10:00:02+00:00"})  # fmt: skip
    assert status.status is TaskState.succeeded
    assert status.result is not None and status.result.detections[0].label == "person"
