from __future__ import annotations

import os
import stat
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

from ml_common.errors import TaskNotFound
from ml_common.storage import Storage


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path)


def test_keys_are_dated_and_annotated_keys_follow_uploads(storage: Storage) -> None:
    task_id = str(uuid.uuid4())
    key = storage.upload_key(task_id, "png", date(2026, 11, 27))
    assert key == f"upload/2026-11-27/{task_id}.png"
    assert storage.annotated_key(key, "jpg") == f"object-detection/2026-11-27/{task_id}.jpg"


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "upload/2026-11-27/../../secret.jpg",
        "/etc/passwd",
        "upload/2026-11-27/not-a-uuid.jpg",
        "upload/2026-11-27/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f.exe",
        "models/2026-11-27/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f.jpg",
    ],
)
def test_only_keys_it_built_are_accepted(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        storage.path(key)


def test_write_is_atomic_private_and_leaves_no_temp_files(storage: Storage) -> None:
    key = storage.upload_key(str(uuid.uuid4()), "jpg")
    path = storage.write(key, b"abc")
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert storage.read(key) == b"abc"
    storage.delete(key)
    with pytest.raises(TaskNotFound):
        storage.read(key)


def test_purge_removes_only_old_files(storage: Storage) -> None:
    old = storage.write(storage.upload_key(str(uuid.uuid4()), "jpg", date(2026, 1, 1)), b"o")
    new = storage.write(storage.upload_key(str(uuid.uuid4()), "jpg"), b"n")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert storage.purge_older_than(7) == 1
    assert not old.exists() and not old.parent.exists()
    assert new.exists()
