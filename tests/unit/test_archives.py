"""Archives are checked whole (paths, links, counts, bomb ratio) before any file is read."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from ml_api.archives import (
    MAX_MEMBER_NAME_BYTES,
    ArchiveLimits,
    archive_kind,
    check_archive,
    read_archive,
)
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
    assert (first.name, first.data) == ("1.jpg", b"x" * 10)  # the name, without its folder
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


def tar_of_folders(count: int, mode: str = "w:xz") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:
        for i in range(count):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        one = tarfile.TarInfo("a.jpg")
        one.size = 1
        archive.addfile(one, io.BytesIO(b"x"))
    buf.seek(0)
    return buf


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_name_keeps_its_last_part_without_control_characters(kind: str) -> None:
    files = {"photos/2024/\x1b[31mred\r\n.jpg": b"x", "b\x01c\x7f.jpg": b"y"}
    fh = tar_of(files) if kind == "tar" else zip_of(files)
    check_archive(fh, kind, LIMITS)
    assert [m.name for m in read_archive(fh, kind, LIMITS)] == ["[31mred.jpg", "bc.jpg"]


@pytest.mark.parametrize(
    "name",
    ["x" * (MAX_MEMBER_NAME_BYTES - 3) + ".jpg", "é" * 130 + ".jpg", "d/" * 2100 + "a.jpg",
     "n" * 8 * 1024 * 1024],
    ids=["name-256-bytes", "name-264-utf8-bytes", "path-past-4096", "name-8-mib"],
)  # fmt: skip
def test_a_name_past_its_length_in_bytes_refuses_the_archive(name: str) -> None:
    with pytest.raises(UnsafeArchive, match="bytes"):
        check_archive(tar_of({name: b"x"}, mode="w:xz"), "tar", LIMITS)


def test_a_name_of_255_bytes_is_taken() -> None:
    name = "d/" * 100 + "x" * (MAX_MEMBER_NAME_BYTES - 4) + ".jpg"
    fh = tar_of({name: b"x"})
    assert check_archive(fh, "tar", LIMITS) == 1
    assert len(next(read_archive(fh, "tar", LIMITS)).name.encode()) == MAX_MEMBER_NAME_BYTES


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_folders_count_against_the_file_limit(kind: str) -> None:
    if kind == "tar":
        fh = tar_of_folders(3)
    else:
        fh = zip_of({"d1/": b"", "d2/": b"", "d3/": b"", "a.jpg": b"x"})
    with pytest.raises(BatchTooLarge, match="files and folders"):
        check_archive(fh, kind, LIMITS)


def test_folder_headers_count_against_the_ratio() -> None:
    """200k folders in a small tar.xz once unpacked to 100 MB of headers, unchecked."""
    many = ArchiveLimits(max_files=100_000, max_bytes=10_000_000, max_file_bytes=100,
                         max_ratio=50)  # fmt: skip
    fh = tar_of_folders(20_000)
    assert len(fh.getvalue()) * 50 < 20_000 * 512
    with pytest.raises(UnsafeArchive, match="ratio"):
        check_archive(fh, "tar", many)
