"""A batch upload's files, from a multipart form of images or of one zip/tar archive.

The form parser has already spooled each part (to disk past a few MB), so an archive is read
from there one file at a time and never held whole in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ml_api.archives import ArchiveLimits, Member, archive_kind, check_archive, read_archive
from ml_api.originals import Size, parse_original_size
from ml_api.scores import MIN_SCORE_FIELD
from ml_common.errors import (
    BatchTooLarge,
    EmptyBatch,
    InvalidOriginalSize,
    PayloadTooLarge,
    UnsupportedMedia,
)
from ml_common.settings import Settings

CHUNK = 1024 * 1024
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "images, or one zip or tar archive of images",
                        },
                        "model": {"type": "string", "description": "a served model"},
                        "callback_url": {
                            "type": "string",
                            "description": "POSTed a signed event when the batch ends (webhooks)",
                        },
                        "original_size": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "one per file, in order: WIDTHxHEIGHT of the photo "
                            "the file was shrunk from, or empty for a file sent whole",
                        },
                        "min_score": {**MIN_SCORE_FIELD},
                    },
                }
            }
        },
    }
}


def archive_limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_files=settings.batch_max_files,
        max_bytes=settings.batch_max_bytes,
        max_file_bytes=settings.max_upload_bytes,
        max_ratio=settings.archive_max_ratio,
    )


@dataclass(frozen=True)
class Intake:
    """The files of one batch request, checked as a whole before any is submitted."""

    files: Sequence[UploadFile]
    limits: ArchiveLimits
    archive: str | None  # "zip" or "tar" when the one part is an archive
    count: int
    sizes: Sequence[Size | None] = ()  # each file's original_size, when it was shrunk

    @classmethod
    def check(
        cls, files: Sequence[UploadFile], limits: ArchiveLimits, sizes: Sequence[Size | None] = ()
    ) -> Intake:
        """Refuse an empty batch, too many files, or an unsafe archive (blocking: file I/O)."""
        if not files:
            raise EmptyBatch("send one or more images, or one zip or tar archive, as 'files'")
        kind = archive_kind(_raw(files[0])) if len(files) == 1 else None
        count = check_archive(_raw(files[0]), kind, limits) if kind else len(files)
        if count > limits.max_files:
            raise BatchTooLarge(f"a batch may have {limits.max_files} files, this one {count}")
        if sizes and (kind or len(sizes) != len(files)):
            raise InvalidOriginalSize(
                "send one original_size per file, in the files' order (empty for a file sent "
                "whole); an archive's files cannot have one"
            )
        return cls(files, limits, kind, count, sizes)

    def fingerprint(self) -> str:
        """A digest of every part's name and bytes: what an Idempotency-Key is checked against."""
        digest = hashlib.sha256()
        for upload in self.files:
            fh = _raw(upload)
            digest.update((upload.filename or "").encode() + b"\0")
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
            fh.seek(0)
            digest.update(b"\0")
        return digest.hexdigest()

    def members(self) -> Iterator[Member]:
        """The batch's files in order, read one at a time (blocking)."""
        if self.archive:
            yield from read_archive(_raw(self.files[0]), self.archive, self.limits)
            return
        for index, upload in enumerate(self.files):
            member = _member(upload, index, self.limits.max_file_bytes)
            yield replace(member, original_size=self.sizes[index]) if self.sizes else member


def _raw(upload: UploadFile) -> BinaryIO:
    upload.file.seek(0)
    return upload.file


def _member(upload: UploadFile, index: int, max_bytes: int) -> Member:
    name = upload.filename or f"file-{index + 1}"
    data = _raw(upload).read(max_bytes + 1)
    if len(data) > max_bytes:
        return Member(name, None, PayloadTooLarge(f"past the limit of {max_bytes} bytes per file"))
    return Member(name, data)


class BatchFormParser(MultiPartParser):
    """Spools each part to disk past 1 MB: the app's parser keeps a single upload in memory."""

    spool_max_size = 1024 * 1024


@dataclass(frozen=True)
class BatchForm:
    """A batch request's form: its files, its text fields (None when absent) and its
    `original_size` fields (one per file, or none)."""

    files: list[UploadFile]
    model: str | None
    callback_url: str | None
    sizes: list[Size | None]
    min_score: str | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@asynccontextmanager
async def form_files(request: Request, max_files: int) -> AsyncIterator[BatchForm]:
    """The request's form (BatchForm), its spooled files closed on leaving."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMedia("send the files as multipart/form-data")
    parser = BatchFormParser(
        request.headers, request.stream(), max_files=max_files, max_fields=16 + max_files
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise BatchTooLarge(f"a batch may have {max_files} files") from exc
        raise UnsupportedMedia(f"the multipart form is malformed: {exc.message}") from exc
    try:
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        sizes = [parse_original_size(s) if isinstance(s, str) and s else None
                 for s in form.getlist("original_size")]  # fmt: skip
        text = [_text(form.get(name)) for name in ("model", "callback_url", "min_score")]
        yield BatchForm(files, text[0], text[1], sizes, text[2])
    finally:
        await form.close()
