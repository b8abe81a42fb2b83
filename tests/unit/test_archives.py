"""Archives are checked whole (paths, links, counts, bomb ratio) before any file is read."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from ml_api.archives import ArchiveLimits, archive_kind, check_archive, read_archive
from ml_common.errors import BatchTooLarge, UnsafeArchive

LIMITS = ArchiveLimits(max_files=3, max_bytes=10_000_000, max_file_bytes=100, max_ratio=50)


def tar_of(files: dict[str, bytes], mode: str = "w:gz") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def zip_of(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buf.seek(0)
    return buf


def test_a_tar_is_read_in_order_and_an_oversized_file_fails_alone() -> None:
    fh = tar_of({"a/1.jpg": b"x" * 10, "a/2.jpg": b"y" * 200})
    assert archive_kind(fh) == "tar" and check_archive(fh, "tar", LIMITS) == 2
    first, second = read_archive(fh, "tar", LIMITS)
    assert (first.name, first.data) == ("a/1.jpg", b"x" * 10)
    assert second.data is None and second.error is not None and second.error.status == 413


def test_a_zip_with_too_many_files_is_refused() -> None:
    fh = zip_of({f"{i}.jpg": b"z" for i in range(4)})
    assert archive_kind(fh) == "zip"
    with pytest.raises(BatchTooLarge):
        check_archive(fh, "zip", LIMITS)


def test_a_windows_drive_path_escapes() -> None:
    with pytest.raises(UnsafeArchive):
        check_archive(zip_of({"C:/x.jpg": b"z"}), "zip", LIMITS)


def test_not_an_archive_and_a_damaged_one() -> None:
    assert archive_kind(io.BytesIO(b"\xff\xd8\xff plain jpeg bytes")) is None
    damaged = io.BytesIO(zip_of({"a.jpg": b"z" * 50}).getvalue()[:-30])
    with pytest.raises(UnsafeArchive):
        list(read_archive(damaged, "zip", LIMITS))
