"""The contract's models: round-trips, and results stored by an older worker."""

from __future__ import annotations

from ml_common.schemas import FINAL_STATES, DetectionResult
from ml_common.settings import Settings
from mlprod_client.client import FINAL

STORED = {
    "width": 10,
    "height": 10,
    "model_name": "m",
    "model_version": "1",
    "inference_ms": 5.0,
    "detections": [],
}


def test_a_result_stored_before_the_threshold_was_reported_reads_the_default() -> None:
    default = Settings.model_fields["score_threshold"].default
    assert DetectionResult.model_validate(STORED).score_threshold == default


def test_the_reported_threshold_survives_a_round_trip() -> None:
    reported = DetectionResult.model_validate({**STORED, "score_threshold": 0.55})
    assert DetectionResult.model_validate_json(reported.model_dump_json()).score_threshold == 0.55


def test_the_sdk_ends_a_task_where_the_api_does() -> None:
    assert {state.value for state in FINAL_STATES} == FINAL
