"""Task and queue names, and the payload shape, shared by the API (producer) and the worker."""

from __future__ import annotations

from typing import TypedDict

DETECT_TASK = "mlprod.detect"
DEFAULT_QUEUE = "detections"


class DetectPayload(TypedDict):
    """Keyword arguments of the detect task: storage keys only, never image bytes."""

    upload_key: str
    created_at: str


CLEANUP_TASK = "mlprod.cleanup"
