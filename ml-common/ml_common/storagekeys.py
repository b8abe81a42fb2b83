"""The storage key layout: ``<kind>/<YYYY-MM-DD>/<task id>.<ext>``, built and parsed here only.

Both storages (`ml_common.storage.LocalStorage`, `ml_common.s3storage.S3Storage`) take their
keys from this module; only keys that match `KEY_RE` are accepted back, so no request can name
a path on the server or an object in the bucket.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

UPLOAD = "upload"
ANNOTATED = "object-detection"
KINDS = (UPLOAD, ANNOTATED)
KEY_RE = re.compile(
    r"^(upload|object-detection)/(\d{4}-\d{2}-\d{2})/"
    r"([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\.(jpg|png|webp|bmp|gif)$"
)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def upload_key(task_id: str, ext: str, day: date | None = None) -> str:
    return f"{UPLOAD}/{(day or _today()).isoformat()}/{task_id}.{ext}"


def parse_key(key: str) -> tuple[str, str, str, str]:
    """(kind, day, task id, extension) of a key this module built; ValueError for any other."""
    match = KEY_RE.fullmatch(key)
    if match is None:
        raise ValueError(f"not a storage key: {key!r}")
    kind, day, task_id, ext = match.groups()
    return kind, day, task_id, ext


def cutoff_day(cutoff: float) -> str:
    """The newest day folder that may hold a file written before `cutoff` (epoch seconds)."""
    return datetime.fromtimestamp(cutoff, timezone.utc).date().isoformat()


class KeyLayout:
    """The key builders both implementations share."""

    def upload_key(self, task_id: str, ext: str, day: date | None = None) -> str:
        return upload_key(task_id, ext, day)

    def annotated_key(self, upload_key: str, ext: str) -> str:
        """The annotated image's key: same day and task id as its upload."""
        _, day, task_id, _ = parse_key(upload_key)
        return f"{ANNOTATED}/{day}/{task_id}.{ext}"

    @staticmethod
    def parse(key: str) -> tuple[str, str, str, str]:
        return parse_key(key)
