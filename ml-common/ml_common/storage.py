"""Where uploads and annotated images live (a folder or an S3 bucket); the one atomic write.

Keys are relative POSIX paths such as ``upload/2026-11-27/<uuid>.jpg``, built and checked by
`ml_common.storagekeys` only, so no request can name a path on the server or an object in
the bucket.
`open_storage` picks the implementation from the settings; callers see only `Storage`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ml_common.errors import StorageMisconfigured, StorageUnavailable, TaskNotFound
from ml_common.storagekeys import KEY_RE, KINDS, UPLOAD, KeyLayout

if TYPE_CHECKING:
    from ml_common.settings import Settings

logger = logging.getLogger(__name__)
# errors of a shared folder that may pass (the worker retries them)
PASSING_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.ENOTCONN})


def atomic_write(
    path: Path, data: bytes | str, mode: int = 0o640, *, exclusive: bool = False
) -> None:
    """Write `data` to `path` so that a reader sees the whole file or none of it.

    The bytes go to a temporary file in the same folder, reach the disk (fsync), get `mode`
    and then take the name in one step; on any failure the temporary file is removed. With
    `exclusive`, an existing `path` is kept and FileExistsError raised.
    """
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        # a link fails if the name exists; either way the name appears with the whole file
        (os.link if exclusive else os.replace)(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if exclusive:
        Path(tmp).unlink()


class Storage(Protocol):
    """Uploads and annotated images under keys this module builds; errors are domain errors:
    TaskNotFound (no such file), StorageUnavailable (may pass: retry) and StorageMisconfigured."""

    def upload_key(self, task_id: str, ext: str, day: date | None = None) -> str: ...
    def annotated_key(self, upload_key: str, ext: str) -> str: ...
    def parse(self, key: str) -> tuple[str, str, str, str]: ...
    def write(self, key: str, data: bytes) -> None: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def uploads(self) -> Iterator[tuple[str, float]]: ...
    def purge_older_than(self, days: int, now: float | None = None) -> int: ...
    def check(self) -> None: ...
    def presigned_url(self, key: str, expires_s: int) -> str | None: ...


@dataclass(frozen=True)
class LocalStorage(KeyLayout):
    """A root folder with ``upload/`` and ``object-detection/`` below it (one host, or NFS)."""

    root: Path

    def path(self, key: str) -> Path:
        self.parse(key)
        return self.root / key

    def write(self, key: str, data: bytes) -> None:
        """Write atomically: a reader sees the whole file or none of it."""
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            atomic_write(target, data)
        except OSError as exc:
            raise StorageUnavailable(f"the upload could not be stored: {exc.strerror}") from exc

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise TaskNotFound(f"no stored file for {key}") from exc
        except OSError as exc:
            if exc.errno in PASSING_ERRNOS:  # a shared folder (NFS) that stalls or drops
                raise StorageUnavailable(f"the stored file could not be read: {exc}") from exc
            raise  # the file's own fault (a folder in its place, no permission): fails at once

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def uploads(self) -> Iterator[tuple[str, float]]:
        """Each stored upload's key and when it was written (epoch seconds)."""
        for path in sorted((self.root / UPLOAD).glob("*/*")):
            key = path.relative_to(self.root).as_posix()
            if KEY_RE.fullmatch(key):
                yield key, path.stat().st_mtime

    def purge_older_than(self, days: int, now: float | None = None) -> int:
        """Delete stored files (and empty day folders) older than `days`; returns files removed."""
        cutoff = (now if now is not None else time.time()) - days * 86400
        removed = 0
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for day_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                for f in day_dir.iterdir():
                    if f.is_file() and f.stat().st_mtime < cutoff:
                        f.unlink(missing_ok=True)
                        removed += 1
                if not any(day_dir.iterdir()):
                    shutil.rmtree(day_dir, ignore_errors=True)
        return removed

    def check(self) -> None:
        """Fail at process start when the folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StorageMisconfigured(
                f"storage folder {self.root} is not writable: {exc.strerror}"
            ) from exc

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None  # a folder has no URLs: the API sends the bytes


def open_storage(settings: Settings) -> Storage:
    """The storage the settings name: an S3 bucket for ``s3://`` URLs, else a local folder."""
    location = settings.s3_location
    if location is None:
        return LocalStorage(settings.storage_root)
    from ml_common.s3storage import S3Storage  # boto3 loads only where a bucket is used

    return S3Storage.from_settings(settings, *location)


def check_at_start(storage: Storage) -> None:
    """Stop a starting process on wrong credentials, a missing bucket or an unwritable folder,
    with the reason; a store that is down only warns (it may come back: requests get a 503)."""
    try:
        storage.check()
    except StorageMisconfigured as exc:
        logger.critical("storage: %s", exc.detail)
        raise SystemExit(f"storage: {exc.detail}") from exc
    except StorageUnavailable as exc:
        logger.warning("storage not reachable yet: %s", exc.detail)
