"""What single and batch uploads share: reading the files, the model choice, the history."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Annotated

from fastapi import Depends
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ml_client.api import FilePart
from ml_client.deps import ApiDep, HistoryDep, OriginalsDep, SettingsDep, UserDep
from ml_client.history import NAME_MAX
from ml_client.schemas import HistoryEntry
from ml_common.errors import InvalidImage, PayloadTooLarge, ValidationFailed

UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def clean_filename(name: str | None) -> str:
    cleaned = UNSAFE_NAME_CHARS.sub("_", (name or "").rsplit("/", 1)[-1]).strip()
    return cleaned[:NAME_MAX] or "image"


def form_text(value: object) -> str | None:
    """A text field of the form, passed on as sent (the API checks it); empty: not sent."""
    return (value.strip() or None) if isinstance(value, str) else None


def compare_group(value: object) -> str | None:
    """The form's `compare` field: the id the page gave one photo's uploads to each model."""
    text = form_text(value)
    if text is None:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValidationFailed("compare must be a UUID, as the page sends it") from None


def chosen_model(value: object) -> str | None:
    """The form's `model` field; empty means the API's default."""
    return form_text(value)


def chosen_min_score(field: object, query: str | None) -> str | None:
    """The lowest score to keep, as the page sent it (its form's `min_score` field, else the
    query's), passed on as it is: the API checks it (422 `invalid_min_score`). None: the
    API's threshold."""
    value = field if isinstance(field, str) else query
    return value.strip() or None if value else None


class Uploads:
    """One signed-in user's uploads: files read within the limit, tasks added to the history."""

    def __init__(
        self,
        user: UserDep,
        api: ApiDep,
        history: HistoryDep,
        originals: OriginalsDep,
        settings: SettingsDep,
    ) -> None:
        self.user, self.api, self.history = user, api, history
        self.originals, self.max_bytes = originals, settings.max_upload_bytes

    async def read(self, file: object) -> FilePart:
        """One file part as (clean name, bytes, media type)."""
        if not isinstance(file, UploadFile):
            raise InvalidImage("choose an image file to upload")
        data = await file.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            limit_mib = self.max_bytes / 1024 / 1024
            raise PayloadTooLarge(f"the file is larger than the limit of {limit_mib:.1f} MiB")
        media_type = file.content_type or "application/octet-stream"
        return clean_filename(file.filename), data, media_type

    async def remember(
        self, task_id: str, name: str, data: bytes, batch_id: str | None = None,
        compare_id: str | None = None,
    ) -> None:  # fmt: skip
        """Add a submitted task to the history and keep its original for the page."""
        now = datetime.now(timezone.utc).isoformat()
        entry = HistoryEntry(
            task_id=task_id, filename=name, submitted_at=now, batch_id=batch_id,
            compare_id=compare_id,
        )  # fmt: skip
        dropped = await self.history.add(self.user, entry)
        await run_in_threadpool(self.originals.save, task_id, data)
        for old in dropped:
            await run_in_threadpool(self.originals.delete, old)


UploadsDep = Annotated[Uploads, Depends()]
