"""Where uploads and annotated images live on shared storage, and how they are written safely.

Keys are relative POSIX paths such as ``upload/2026-11-27/<uuid>.jpg``. Only keys this module
built are accepted back, so no request can name a path on the server.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ml_common.errors import TaskNotFound

UPLOAD = "upload"
ANNOTATED = "object-detection"
KEY_RE = re.compile(
    r"^(upload|object-detection)/(\d{4}-\d{2}-\d{2})/"
    r"([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\.(jpg|png|webp|bmp|gif)$"
)


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


def _today() -> date:
    return datetime.now(timezone.utc).date()


@dataclass(frozen=True)
class Storage:
    """A root folder with ``upload/`` and ``object-detection/`` below it."""

    root: Path

    def upload_key(self, task_id: str, ext: str, day: date | None = None) -> str:
        return f"{UPLOAD}/{(day or _today()).isoformat()}/{task_id}.{ext}"

    def annotated_key(self, upload_key: str, ext: str) -> str:
        """The annotated image's key: same day and task id as its upload."""
        _, day, task_id, _ = self.parse(upload_key)
        return f"{ANNOTATED}/{day}/{task_id}.{ext}"

    @staticmethod
    def parse(key: str) -> tuple[str, str, str, str]:
        match = KEY_RE.fullmatch(key)
        if match is None:
            raise ValueError(f"not a storage key: {key!r}")
        kind, day, task_id, ext = match.groups()
        return kind, day, task_id, ext

    def path(self, key: str) -> Path:
        self.parse(key)
        return self.root / key

    def write(self, key: str, data: bytes) -> Path:
        """Write atomically: a reader sees the whole file or none of it."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        atomic_write(target, data)
        return target

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise TaskNotFound(f"no stored file for {key}") from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def purge_older_than(self, days: int, now: float | None = None) -> int:
        """Delete stored files (and empty day folders) older than `days`; returns files removed."""
        cutoff = (now if now is not None else time.time()) - days * 86400
        removed = 0
        for kind in (UPLOAD, ANNOTATED):
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
