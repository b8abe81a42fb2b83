"""Zip and tar archives of images, read safely: the whole archive is checked before any file
is taken (no escaping paths, no links, no compression bombs), then files are read one at a time.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from ml_common.errors import (
    BatchTooLarge,
    InvalidImage,
    MLProdError,
    PayloadTooLarge,
    UnsafeArchive,
)

READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError)
# a member's path in the archive, and the file name kept of it, in UTF-8 bytes (PATH_MAX and
# NAME_MAX of Linux): every read of the batch returns the names, so they must stay small
MAX_MEMBER_PATH_BYTES = 4096
MAX_MEMBER_NAME_BYTES = 255


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int
    max_bytes: int  # all files uncompressed
    max_file_bytes: int  # one file; a larger one fails alone
    max_ratio: float  # uncompressed over compressed


@dataclass(frozen=True)
class Member:
    """One file of the archive: its bytes, or why it cannot be taken (it fails alone)."""

    name: str
    data: bytes | None
    error: MLProdError | None = None
    original_size: tuple[int, int] | None = None  # the photo's, when the client shrank it


def archive_kind(fh: BinaryIO) -> str | None:
    """ "zip", "tar" (plain or compressed) or None, by content; the position is kept."""
    start = fh.tell()
    try:
        if zipfile.is_zipfile(fh):
            return "zip"
        fh.seek(start)
        try:
            with tarfile.open(fileobj=fh, mode="r:*"):
                return "tar"
        except (tarfile.TarError, EOFError, OSError):
            return None
    finally:
        fh.seek(start)


def _safe_name(name: str) -> str:
    """The file name kept of a member's path: its last part, without control characters.

    UnsafeArchive if the path escapes the archive or either is past its length in bytes."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_MEMBER_PATH_BYTES:
        raise UnsafeArchive(
            f"an archive path is {len(name.encode('utf-8', 'surrogateescape'))} bytes long, "
            f"past the limit of {MAX_MEMBER_PATH_BYTES}: {name[:80]!r}…"
        )
    clean = name.replace("\\", "/")
    parts = clean.split("/")
    if clean.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
        raise UnsafeArchive(f"the archive path {name[:200]!r} escapes the archive")
    last = posixpath.basename(posixpath.normpath(clean))
    kept = "".join(c for c in last if unicodedata.category(c) != "Cc")
    if len(kept.encode("utf-8", "surrogateescape")) > MAX_MEMBER_NAME_BYTES:
        raise UnsafeArchive(
            f"the file name {kept[:80]!r}… in the archive is longer than "
            f"{MAX_MEMBER_NAME_BYTES} bytes"
        )
    return kept


def _check_totals(
    count: int, total: int, packed: int, limits: ArchiveLimits, unpacked: int = 0
) -> None:
    """`count` members (folders too) with `total` bytes of files; `unpacked` the bytes the
    archive's stream unpacks to (a tar's headers too), where it is larger."""
    if count > limits.max_files:
        raise BatchTooLarge(f"the archive has more than {limits.max_files} files and folders")
    if total > limits.max_bytes:
        raise BatchTooLarge(f"the archive unpacks to more than {limits.max_bytes} bytes")
    total = max(total, unpacked)
    if total > limits.max_ratio * max(packed, 1) and total > 1024 * 1024:
        raise UnsafeArchive(
            f"the archive unpacks to {total} bytes from {packed}: past the ratio "
            f"{limits.max_ratio:g} allowed"
        )


def _member(name: str, size: int, read: Callable[[], bytes], limits: ArchiveLimits) -> Member:
    if size > limits.max_file_bytes:
        detail = f"{size} bytes, past the limit of {limits.max_file_bytes} per file"
        return Member(name, None, PayloadTooLarge(detail))
    try:
        return Member(name, read())
    except READ_ERRORS as exc:  # a damaged entry (bad CRC, lying size) fails alone
        return Member(name, None, InvalidImage(f"the file is damaged in the archive: {exc}"))


def _zip_files(
    archive: zipfile.ZipFile, packed: int, limits: ArchiveLimits
) -> list[zipfile.ZipInfo]:
    everything = archive.infolist()
    infos = [i for i in everything if not i.is_dir()]
    _check_totals(len(everything), sum(i.file_size for i in infos), packed, limits)
    for info in infos:
        _safe_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"the archive holds a link: {info.filename[:200]!r}")
    return infos


def _tar_files(
    archive: tarfile.TarFile, packed: int, limits: ArchiveLimits
) -> list[tarfile.TarInfo]:
    members, total = [], 0
    # one pass over the headers, stopped as soon as a limit is passed; a folder costs a header
    # to read too, so it counts as a member
    for count, info in enumerate(archive, start=1):
        _safe_name(info.name)
        if info.issym() or info.islnk() or not (info.isfile() or info.isdir()):
            raise UnsafeArchive(f"the archive holds a link or special file: {info.name[:200]!r}")
        if info.isfile():
            members.append(info)
            total += info.size
        _check_totals(count, total, packed, limits, unpacked=archive.offset)
    return members


def _zip_members(fh: BinaryIO, packed: int, limits: ArchiveLimits) -> Iterator[Member]:
    with zipfile.ZipFile(fh) as archive:
        for info in _zip_files(archive, packed, limits):
            read = partial(archive.read, info)
            yield _member(_safe_name(info.filename), info.file_size, read, limits)


def _tar_members(fh: BinaryIO, packed: int, limits: ArchiveLimits) -> Iterator[Member]:
    with tarfile.open(fileobj=fh, mode="r:*") as archive:
        for info in _tar_files(archive, packed, limits):
            extracted = archive.extractfile(info)
            assert extracted is not None  # a regular file always has a reader
            yield _member(_safe_name(info.name), info.size, extracted.read, limits)


def check_archive(fh: BinaryIO, kind: str, limits: ArchiveLimits) -> int:
    """The number of files; UnsafeArchive or BatchTooLarge if the archive may not be taken."""
    start = fh.tell()
    try:
        if kind == "zip":
            with zipfile.ZipFile(fh) as archive:
                return len(_zip_files(archive, _length(fh), limits))
        with tarfile.open(fileobj=fh, mode="r:*") as archive:
            return len(_tar_files(archive, _length(fh), limits))
    except READ_ERRORS as exc:
        raise UnsafeArchive(f"the archive is damaged: {exc}") from exc
    finally:
        fh.seek(start)


def read_archive(fh: BinaryIO, kind: str, limits: ArchiveLimits) -> Iterator[Member]:
    """The archive's files in order, each read when its turn comes (after check_archive)."""
    members = _zip_members if kind == "zip" else _tar_members
    try:
        yield from members(fh, _length(fh), limits)
    except READ_ERRORS as exc:
        raise UnsafeArchive(f"the archive is damaged: {exc}") from exc


def _length(fh: BinaryIO) -> int:
    start = fh.tell()
    size = fh.seek(0, os.SEEK_END)
    fh.seek(start)
    return size
