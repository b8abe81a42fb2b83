from __future__ import annotations

import json

from ml_common.batchhooks import (
    EVENT_BATCH_COMPLETED,
    FINISH_KEYS,
    batch_counts,
    completed_delivery,
    finish_args,
)
from ml_common.schemas import TaskState


def test_the_completed_event_counts_each_state() -> None:
    raw = {b"owner": b"k1", b"callback_url": b"https://h.example/x", b"expected": b"3",
           b"final:succeeded": b"2", b"final:cancelled": b"1"}  # fmt: skip
    delivery = completed_delivery("b1", raw)
    assert delivery is not None
    assert (delivery.url, delivery.owner, delivery.event) == (
        "https://h.example/x",
        "k1",
        EVENT_BATCH_COMPLETED,
    )
    data = json.loads(delivery.body)["data"]
    assert data == {
        "batch_id": "b1",
        "total": 3,
        "counts": {"succeeded": 2, "failed": 0, "cancelled": 1},
    }


def test_a_batch_without_a_callback_has_no_delivery() -> None:
    assert completed_delivery("b1", {"owner": "k1", "expected": "3"}) is None


def test_the_script_keys_are_the_batch_hash_its_final_and_its_started_set() -> None:
    keys = finish_args("b1", ["t1"], "failed", 60)[:FINISH_KEYS]
    assert keys == ["mlprod:batch:b1", "mlprod:batch:b1:final", "mlprod:batch:b1:started"]


def test_counts_come_from_the_hash_and_the_started_set() -> None:
    raw = {b"total": b"10", b"final:succeeded": b"4", b"final:failed": b"1",
           b"final:cancelled": b"2"}  # fmt: skip
    counts = batch_counts(raw, started=2)
    assert counts == {TaskState.queued: 1, TaskState.started: 2, TaskState.succeeded: 4,
                      TaskState.failed: 1, TaskState.cancelled: 2}  # fmt: skip
