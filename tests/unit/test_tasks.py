"""The detect task's return value: Celery stores it as the DetectionResult's JSON and logs it
in short, without walking its detections."""

from __future__ import annotations

from celery.utils.saferepr import saferepr
from kombu.utils.json import dumps, loads

from ml_celery.tasks import StoredResult


def test_a_stored_result_is_stored_as_its_json_and_logged_in_short() -> None:
    value = {"width": 640, "detections": [{"label": "person"}, {"label": "cat"}]}
    stored = StoredResult(value)
    # what Celery's backend encodes (kombu's JSON) is the plain result
    assert loads(dumps({"status": "SUCCESS", "result": stored})) == {
        "status": "SUCCESS",
        "result": value,
    }
    assert saferepr(stored, 1024) == "<2 detections>"  # Celery's "succeeded" line
