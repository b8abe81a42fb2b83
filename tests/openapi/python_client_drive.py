"""Drive a client that openapi-python-client generated from the live OpenAPI document, as a user
of it would: run in the generator's own venv by tests/integration/test_openapi.py,

    python python_client_drive.py API_URL API_KEY PHOTO

It exits non-zero (an AssertionError's traceback) at the first answer that is not as typed."""

from __future__ import annotations

import io
import json
import sys
import time
import uuid
from pathlib import Path

from mlprod_api_client import AuthenticatedClient
from mlprod_api_client.api.batches import create_batch, export_batch, get_batch
from mlprod_api_client.api.detections import create_detection, get_detection
from mlprod_api_client.models import (
    BatchCreated,
    BatchStatus,
    BodyCreateDetection,
    CreateBatchBody,
    ErrorOut,
    ExportFormat,
    TaskCreated,
    TaskState,
    TaskStatus,
)
from mlprod_api_client.types import File

FINAL = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


def upload_and_read(client: AuthenticatedClient, photo: bytes) -> None:
    """Upload a photo, wait for its result (long-poll), and read its detections."""
    body = BodyCreateDetection(file=File(io.BytesIO(photo), "astronaut.jpg", "image/jpeg"))
    created = create_detection.sync(client=client, body=body)
    assert isinstance(created, TaskCreated), created
    status = get_detection.sync(uuid.UUID(created.task_id), client=client, wait=30)
    deadline = time.monotonic() + 120
    while isinstance(status, TaskStatus) and status.status not in FINAL:
        assert time.monotonic() < deadline, status
        status = get_detection.sync(uuid.UUID(created.task_id), client=client, wait=30)
    assert isinstance(status, TaskStatus), status
    assert status.status is TaskState.SUCCEEDED, status
    assert status.result and status.result.detections, status.result
    assert status.result.detections[0].label, status.result.detections[0]


def batch_and_export(client: AuthenticatedClient, photo: bytes) -> None:
    """Upload two photos as a batch, wait until it is finished, export it as JSON Lines."""
    files = [File(io.BytesIO(photo), f"photo-{i}.jpg", "image/jpeg") for i in (1, 2)]
    created = create_batch.sync(client=client, body=CreateBatchBody(files=files))
    assert isinstance(created, BatchCreated) and created.total == 2, created
    batch_id = uuid.UUID(created.batch_id)
    deadline = time.monotonic() + 120
    while not (progress := get_batch.sync(batch_id, client=client)) or not getattr(
        progress, "finished", False
    ):
        assert isinstance(progress, BatchStatus), progress
        assert time.monotonic() < deadline, progress
        time.sleep(0.5)
    assert progress.counts["succeeded"] == 2, progress.counts  # counts per TaskState
    exported = export_batch.sync_detailed(batch_id, client=client, format_=ExportFormat.JSONL)
    assert exported.status_code == 200, exported
    rows = [json.loads(line) for line in exported.content.decode().splitlines()]
    assert sorted(row["file_name"] for row in rows) == ["photo-1.jpg", "photo-2.jpg"], rows


def typed_errors(client: AuthenticatedClient, bad_client: AuthenticatedClient) -> None:
    """A bad file, an unknown id and a bad key each come back as an ErrorOut."""
    not_an_image = File(io.BytesIO(b"not an image"), "notes.txt", "text/plain")
    bad_file = create_detection.sync(client=client, body=BodyCreateDetection(file=not_an_image))
    assert isinstance(bad_file, ErrorOut) and bad_file.code == "unsupported_media_type", bad_file
    unknown = get_detection.sync(uuid.uuid4(), client=client)
    assert isinstance(unknown, ErrorOut) and unknown.code == "task_not_found", unknown
    refused = get_batch.sync(uuid.uuid4(), client=bad_client)
    assert isinstance(refused, ErrorOut) and refused.code == "not_authenticated", refused


def main(api_url: str, api_key: str, photo_path: str) -> None:
    photo = Path(photo_path).read_bytes()
    with (
        AuthenticatedClient(base_url=api_url, token=api_key, timeout=60) as client,
        AuthenticatedClient(base_url=api_url, token="mlp_not-a-key") as bad_client,
    ):
        upload_and_read(client, photo)
        batch_and_export(client, photo)
        typed_errors(client, bad_client)


if __name__ == "__main__":
    main(*sys.argv[1:4])
