from __future__ import annotations

import errno
import os
import socket
import stat
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

from ml_common.errors import StorageMisconfigured, StorageUnavailable, TaskNotFound
from ml_common.s3storage import S3Storage, _client_error
from ml_common.settings import Settings
from ml_common.storage import LocalStorage, atomic_write, check_at_start, open_storage


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


def test_a_folder_that_cannot_be_written_fails_the_start_check(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    storage = LocalStorage(blocker / "storage")
    with pytest.raises(StorageMisconfigured, match="not writable"):
        storage.check()
    with pytest.raises(SystemExit, match="storage: storage folder"):
        check_at_start(storage)
    with pytest.raises(StorageUnavailable, match="could not be stored"):
        storage.write(storage.upload_key(str(uuid.uuid4()), "jpg"), b"x")
    LocalStorage(tmp_path / "fine").check()
    assert storage.presigned_url(storage.upload_key(str(uuid.uuid4()), "jpg"), 60) is None


def test_a_store_that_is_down_at_start_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    class Down:
        def check(self) -> None:
            raise StorageUnavailable("connection refused")

    check_at_start(Down())  # type: ignore[arg-type]
    assert "storage not reachable yet: connection refused" in caplog.text


@pytest.mark.parametrize(
    ("url", "location", "root"),
    [
        (None, None, "default"),
        ("s3://mlprod", ("mlprod", ""), "default"),
        ("s3://mlprod/a/b/", ("mlprod", "a/b/"), "default"),
        ("/srv/files", None, "/srv/files"),
        ("file:///srv/files", None, "/srv/files"),
    ],
)
def test_the_storage_url_names_a_folder_or_a_bucket(
    tmp_path: Path, url: str | None, location: tuple[str, str] | None, root: str
) -> None:
    settings = Settings(_env_file=None, storage_dir=tmp_path, storage_url=url)  # type: ignore[call-arg]
    assert settings.s3_location == location
    assert settings.storage_root == (tmp_path if root == "default" else Path(root))
    assert isinstance(open_storage(settings), LocalStorage if location is None else S3Storage)


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://Bad_Bucket", "http://host/bucket"])
def test_other_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="ML_STORAGE_URL is a folder"):
        Settings(_env_file=None, storage_url=url)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("code", "error", "said"),
    [
        ("SignatureDoesNotMatch", StorageMisconfigured, "refused the S3 credentials"),
        ("InvalidAccessKeyId", StorageMisconfigured, "refused the S3 credentials"),
        ("NoSuchBucket", StorageMisconfigured, "does not exist"),
        ("AccessDenied", StorageMisconfigured, "access denied"),
        ("SlowDown", StorageUnavailable, "could not store"),
        ("InternalError", StorageUnavailable, "could not store"),
    ],
)
def test_store_answers_become_domain_errors(code: str, error: type[Exception], said: str) -> None:
    found = _client_error(code, "store", "s3://b/p/k")
    assert type(found) is error
    assert said in str(found)


def test_a_store_that_never_answers_is_bounded_by_the_timeouts(tmp_path: Path) -> None:
    with socket.socket() as silent:  # the kernel takes the connection, nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            storage_dir=tmp_path,
            storage_url="s3://slow",
            s3_endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}",  # type: ignore[arg-type]
            s3_region="us-east-1",
            s3_access_key_id="key",
            s3_secret_access_key="secret",
            s3_read_timeout_s=0.3,
            s3_max_attempts=2,
        )
        storage = open_storage(settings)
        with pytest.raises(StorageUnavailable, match=r"could not store \(\w*Timeout\w*\)"):
            storage.write(storage.upload_key(str(uuid.uuid4()), "jpg"), b"x")


def test_a_stalled_shared_folder_may_pass_a_folder_in_place_of_a_file_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.path(key).mkdir(parents=True)
    with pytest.raises(IsADirectoryError):  # the file's own fault: the task fails at once
        storage.read(key)

    def stale(_: Path) -> bytes:
        raise OSError(errno.ESTALE, "Stale file handle")

    monkeypatch.setattr(Path, "read_bytes", stale)
    with pytest.raises(StorageUnavailable, match="Stale file handle"):  # retried
        storage.read(key)
