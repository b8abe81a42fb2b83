from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from ml_common import records
from ml_common.records import TaskRecord

TID = "7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f"
CREATED = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone.utc)
RECORD = TaskRecord(TID, "key-1", "upload/2026-11-27/x.jpg", CREATED)


def test_a_new_record_has_only_what_the_api_writes() -> None:
    assert RECORD.to_hash() == {
        "owner": "key-1",
        "upload_key": "upload/2026-11-27/x.jpg",
        "created_at": "2026-11-27T10:00:00.123456+00:00",
    }


def test_every_field_survives_the_round_trip() -> None:
    full = replace(
        RECORD,
        queued=True,
        started_at=datetime(2026, 11, 27, 10, 0, 1, tzinfo=timezone.utc),
    )
    assert TaskRecord.from_hash(TID, full.to_hash()) == full
    assert TaskRecord.from_hash(TID, RECORD.to_hash()) == RECORD


def test_bytes_from_a_client_without_decoding_read_the_same() -> None:
    raw = {k.encode(): v.encode() for k, v in replace(RECORD, queued=True).to_hash().items()}
    assert TaskRecord.from_hash(TID, dict(raw)) == replace(RECORD, queued=True)


def test_no_record_without_owner_or_creation_time() -> None:
    assert TaskRecord.from_hash(TID, {}) is None
    assert TaskRecord.from_hash(TID, {"started_at": CREATED.isoformat()}) is None
    assert TaskRecord.from_hash(TID, {"owner": "key-1"}) is None


def test_a_new_record_is_created_now_in_utc() -> None:
    before = datetime.now(timezone.utc)
    record = TaskRecord.new(TID, "key-1", "upload/x.jpg")
    assert before <= record.created_at <= datetime.now(timezone.utc)
    assert not record.queued and record.started_at is None


def test_every_key_of_ours_is_in_the_mlprod_namespace() -> None:
    keys = [
        records.record_key(TID),
        records.ready_key("host", 42),
        records.RATE_PREFIX,
        records.LOGIN_PREFIX,
        records.session_key("secret-session-id"),
        records.history_key("alice"),
    ]
    assert all(key.startswith("mlprod:") for key in keys)
    assert records.ready_key("host", 42).startswith(records.READY_PATTERN.rstrip("*"))
    assert "secret-session-id" not in records.session_key("secret-session-id")
    assert records.meta_key(TID) == f"celery-task-meta-{TID}"  # Celery's name, not ours
