"""How one image arrives at POST /api/v1/detections: a multipart form, or the raw body.

The raw body (`Content-Type: image/*` or `application/octet-stream`) skips the form: its name
comes in the `filename` query parameter or a `Content-Disposition` header, its model, callback
URL and `min_score` in query parameters. Both end as the same `Received`, checked by content
the same way (the Content-Type never decides what the file is).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from ml_api.scores import MIN_SCORE_FIELD
from ml_common.errors import BadRequest, PayloadTooLarge, ValidationFailed

RAW_TYPES = ("image/", "application/octet-stream")  # what a raw body may be sent as
RAW_MEDIA_TYPES = (
    *(f"image/{kind}" for kind in ("jpeg", "png", "webp", "bmp", "gif")),
    "application/octet-stream",
)
_FIELDS = {
    "model": {"type": "string", "description": "a served model (GET /api/v1/models)"},
    "callback_url": {"type": "string", "description": "POSTed a signed event when it ends"},
    "original_size": {
        "type": "string",
        "description": "WIDTHxHEIGHT of the upright photo the image was shrunk from",
    },
    "min_score": {**MIN_SCORE_FIELD},
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
SINGLE_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the image as a form's `file` part, or as the whole body (then its "
        "name, model and callback URL go in the query)",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a JPEG, PNG, WebP, BMP or GIF image",
                        },
                        **_FIELDS,
                    },
                }
            },
            **dict.fromkeys(RAW_MEDIA_TYPES, _BINARY),
        },
    }
}


@dataclass(frozen=True)
class Received:
    """An upload's bytes and what came with them; None: not sent (the query's, or defaults)."""

    data: bytes
    name: str
    model: str | None = None
    callback_url: str | None = None
    original_size: str | None = None
    min_score: str | None = None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload exceeds the limit of {max_bytes} bytes")


async def receive_upload(request: Request, max_bytes: int) -> Received:
    """The upload of a form or a raw body; the form's fields win over the query's."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _from_form(request, max_bytes)
    if media_type.startswith(RAW_TYPES):
        return await _from_body(request, max_bytes)
    raise ValidationFailed(
        "'file' is required: send the image as a multipart form's 'file' part, or as the "
        "whole body with an image Content-Type (or application/octet-stream)"
    )


async def _from_form(request: Request, max_bytes: int) -> Received:
    try:
        async with request.form() as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ValidationFailed("'file' is required (a multipart part with a file name)")
            data = await file.read(max_bytes + 1)
            model, callback = form.get("model"), form.get("callback_url")
            original_size, min_score = form.get("original_size"), form.get("min_score")
    except MultiPartException as exc:
        raise BadRequest(f"the multipart form is malformed: {exc.message}") from exc
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return Received(
        data,
        file.filename or "",
        model if isinstance(model, str) else None,
        callback if isinstance(callback, str) else None,
        original_size if isinstance(original_size, str) else None,
        min_score if isinstance(min_score, str) else None,
    )


async def _from_body(request: Request, max_bytes: int) -> Received:
    """The body, read as it streams in: past `max_bytes` it stops at once (413)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return Received(b"".join(chunks), _disposition_name(request))


def _disposition_name(request: Request) -> str:
    """The file name of a `Content-Disposition` header (RFC 6266, `filename*` too), or ""."""
    header = request.headers.get("content-disposition")
    if not header:
        return ""
    message = Message()
    message["content-disposition"] = header
    return message.get_filename() or ""
