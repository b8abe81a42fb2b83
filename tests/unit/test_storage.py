from __future__ import annotations

import os
import stat
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

from ml_common.errors import TaskNotFound
from ml_common.storage import LocalStorage, atomic_write


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


def test_keys_are_dated_and_annotated_keys_follow_uploads(storage: LocalStorage) -> None:
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
def test_only_keys_it_built_are_accepted(storage: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        storage.path(key)


def test_write_is_atomic_private_and_leaves_no_temp_files(storage: LocalStorage) -> None:
    key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.write(key, b"abc")
    path = storage.path(key)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert storage.read(key) == b"abc"
    storage.delete(key)
    with pytest.raises(TaskNotFound):
        storage.read(key)


def test_atomic_write_replaces_whole_files_and_cleans_up_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    atomic_write(path, "first", 0o600)
    atomic_write(path, "second", 0o600)
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def refuse(*_: object) -> None:
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", refuse)
        with pytest.raises(OSError, match="disk full"):
            atomic_write(path, "third")
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_exclusive_write_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "users"
    atomic_write(path, b"admin", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, b"intruder", exclusive=True)
    assert path.read_bytes() == b"admin"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_purge_removes_only_old_files(storage: LocalStorage) -> None:
    old_key = storage.upload_key(str(uuid.uuid4()), "jpg", date(2026, 1, 1))
    new_key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.write(old_key, b"o")
    storage.write(new_key, b"n")
    old, new = storage.path(old_key), storage.path(new_key)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert storage.purge_older_than(7) == 1
    assert not old.exists() and not old.parent.exists()
    assert new.exists()
