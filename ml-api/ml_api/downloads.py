"""Streamed responses: exports of a task or a batch (ml_api.exports), and event streams."""

from __future__ import annotations

import json
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import IO, BinaryIO, cast
from urllib.parse import quote

from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from ml_api.exports import (
    MEDIA_TYPES,
    SUFFIXES,
    ExportFormat,
    ExportItem,
    coco_detections,
    csv_lines,
    jsonl_lines,
    write_annotated_zip,
)
from ml_api.labelformats import labels_zip, labelstudio_json
from ml_common.settings import Settings
from ml_common.storage import Storage

SPOOL_BYTES = 8 * 1024 * 1024  # a larger zip goes to a temporary file, not memory


def content_disposition(name: str) -> str:
    """`attachment` named `name` (RFC 6266): a plain ASCII `filename` for old clients, and the
    name itself in `filename*` (RFC 5987, UTF-8, percent-encoded). Control characters become
    `_` in both, and the fallback also loses quotes, backslashes, `%` and non-ASCII letters, so
    no name can end the header or the quoted string."""
    name = "".join("_" if unicodedata.category(c) == "Cc" else c for c in name)
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _attachment(basename: str, fmt: ExportFormat) -> dict[str, str]:
    return {"Content-Disposition": content_disposition(f"{basename}{SUFFIXES[fmt]}")}


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    with fh:
        fh.seek(0)
        while chunk := fh.read(256 * 1024):
            yield chunk


async def export_response(
    items: Sequence[ExportItem],
    fmt: ExportFormat,
    basename: str,
    storage: Storage,
    settings: Settings,
) -> Response:
    """The export as a download named `basename` plus the format's suffix."""
    headers = _attachment(basename, fmt)
    media_type = MEDIA_TYPES[fmt]
    if fmt is ExportFormat.coco:
        body = json.dumps(coco_detections(items), separators=(",", ":"))
        return Response(body, media_type=media_type, headers=headers)
    if fmt is ExportFormat.labelstudio:
        return Response(labelstudio_json(items), media_type=media_type, headers=headers)
    if fmt in (ExportFormat.yolo, ExportFormat.voc):
        archive = await run_in_threadpool(labels_zip, items, fmt.value)
        return Response(archive, media_type=media_type, headers=headers)
    if fmt is ExportFormat.zip:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115  # streamed
        await run_in_threadpool(
            write_annotated_zip, items, storage, settings.max_image_pixels, cast(BinaryIO, spool)
        )
        chunks = iterate_in_threadpool(_chunks(spool))
        return StreamingResponse(chunks, media_type=media_type, headers=headers)
    lines = jsonl_lines(items) if fmt is ExportFormat.jsonl else csv_lines(items)
    return StreamingResponse(iterate_in_threadpool(lines), media_type=media_type, headers=headers)


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events, kept out of proxies' buffers and caches."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
