"""`min_score`: checked against ML_MIN_SCORE_FLOOR and 1 (API), carried to the worker in the
task's payload and the Idempotency-Key's fingerprint, and honoured by the pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from ml_api.app import create_app
from ml_api.deps import get_queue
from ml_api.scores import check_min_score
from ml_api.submit import Upload, upload_fingerprint
from ml_celery.pipeline import analyse
from ml_common.apikeys import ApiKeyStore
from ml_common.errors import InvalidMinScore
from ml_common.settings import Settings
from ml_common.storage import LocalStorage
from tests.unit.test_client_routes import RecordingQueue
from tests.unit.test_submit import Queue, Tasks, image, submitter


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("0.05", 0.05), (" 0.5 ", 0.5), (1, 1.0), ("1e-1", 0.1)],
)
def test_a_score_in_range_or_none(value: str | float | None, expected: float | None) -> None:
    assert check_min_score(value, 0.05) == expected


@pytest.mark.parametrize("value", ["0.04", "-1", "1.01", "nan", "inf", "abc", 2.0])
def test_a_score_out_of_range_is_refused_naming_the_range(value: str | float) -> None:
    with pytest.raises(InvalidMinScore, match=r"from 0\.05 \(ML_MIN_SCORE_FLOOR\) to 1"):
        check_min_score(value, 0.05)


def test_the_payload_carries_min_score_only_when_asked(tmp_path: Path) -> None:
    storage, queue = LocalStorage(tmp_path), Queue()
    sending = submitter(storage, queue, Tasks())
    asyncio.run(sending.submit(Upload(image("JPEG"), "owner", min_score=0.05)))
    asyncio.run(sending.submit(Upload(image("JPEG"), "owner")))
    assert queue.sent[0][1]["min_score"] == 0.05
    assert "min_score" not in queue.sent[1][1]


def test_the_fingerprint_tells_scores_apart_and_keeps_the_old_one_without() -> None:
    plain = Upload(b"img", "owner", name="a.jpg")
    low, lower = (
        Upload(b"img", "owner", name="a.jpg", min_score=0.1),
        Upload(b"img", "owner", name="a.jpg", min_score=0.05),
    )
    assert len({upload_fingerprint(u) for u in (plain, low, lower)}) == 3
    # an upload without min_score keeps the digest it had before min_score existed
    from ml_api.submit import fingerprint

    assert upload_fingerprint(plain) == fingerprint(b"img", "", "a.jpg", "", "")


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, RecordingQueue, str]]:
    settings = Settings(
        _env_file=None, detector="fake", storage_dir=tmp_path, broker_url=redis_url,
        result_backend=redis_url, queue_name=f"q{time.monotonic_ns()}",
    )  # type: ignore[call-arg]  # fmt: skip
    plain, _ = ApiKeyStore.from_settings(settings).create("scores")
    app, queue = create_app(settings), RecordingQueue()
    app.dependency_overrides[get_queue] = lambda: queue
    with TestClient(app) as client:
        yield client, queue, plain


def _post(
    api: tuple[TestClient, RecordingQueue, str], route: str, form: dict[str, str],
    query: dict[str, str],
) -> Response:  # fmt: skip
    client, _, key = api
    field = "file" if route.endswith("detections") else "files"
    return client.post(
        route, files={field: ("a.jpg", image("JPEG"), "image/jpeg")}, data=form, params=query,
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip


ROUTES = pytest.mark.parametrize("route", ["/api/v1/detections", "/api/v1/batches"])


@ROUTES
@pytest.mark.parametrize(
    ("form", "query"),
    [({"min_score": "0.01"}, {}), ({}, {"min_score": "0.01"}), ({"min_score": "x"}, {}),
     ({"min_score": "0.5"}, {"min_score": "2"})],
)  # fmt: skip
def test_an_out_of_range_score_is_422_and_nothing_is_queued(
    api: tuple[TestClient, RecordingQueue, str], route: str, form: dict[str, str],
    query: dict[str, str],
) -> None:  # fmt: skip
    answer = _post(api, route, form, query)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] in ("invalid_min_score", "validation_error")
    assert "min_score" in answer.json()["detail"]
    assert api[1].submitted == {}


@ROUTES
@pytest.mark.parametrize(
    ("form", "query", "sent"),
    [({"min_score": "0.05"}, {}, 0.05), ({}, {"min_score": "0.1"}, 0.1),
     ({"min_score": "0.2"}, {"min_score": "0.1"}, 0.2), ({"min_score": ""}, {}, None),
     ({}, {}, None)],
)  # fmt: skip
def test_the_score_asked_for_reaches_the_worker(
    api: tuple[TestClient, RecordingQueue, str], route: str, form: dict[str, str],
    query: dict[str, str], sent: float | None,
) -> None:  # fmt: skip
    answer = _post(api, route, form, query)
    assert answer.status_code == 202, answer.text
    [payload] = api[1].submitted.values()
    assert payload.get("min_score") == sent


def test_the_pipeline_keeps_scores_down_to_min_score(
    settings: Settings, image_bytes: bytes
) -> None:
    result = analyse(image_bytes, settings, min_score=0.05)
    assert result.score_threshold == 0.05
    assert analyse(image_bytes, settings).score_threshold == settings.score_threshold
