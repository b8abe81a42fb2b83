"""Domain errors raised outside the HTTP layer; ml_api.errors maps each to a status code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError


class MLProdError(Exception):
    """Base class; `code` is the machine-readable name clients see."""

    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskNotFound(MLProdError):
    code = "task_not_found"


class TaskNotFinished(MLProdError):
    code = "task_not_finished"


class InvalidImage(MLProdError):
    code = "invalid_image"


class UnsupportedMedia(MLProdError):
    code = "unsupported_media_type"


class PayloadTooLarge(MLProdError):
    code = "payload_too_large"


class ImageTooLarge(MLProdError):
    code = "image_too_large"


class ExtremeAspectRatio(ImageTooLarge):
    """Too long for its width (or the reverse): refused like an image too large."""

    code = "extreme_aspect_ratio"


class QueueUnavailable(MLProdError):
    code = "queue_unavailable"


class BackendUnavailable(MLProdError):
    code = "result_backend_unavailable"


class DetectorUnavailable(MLProdError):
    code = "detector_unavailable"


class NotAuthenticated(MLProdError):
    code = "not_authenticated"


class RateLimited(MLProdError):
    code = "rate_limited"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


@contextmanager
def backend_errors(
    detail: str = "the result store is unreachable; try again shortly",
) -> Iterator[None]:
    """Turn a Redis failure (of the blocking or the asyncio client) into BackendUnavailable."""
    try:
        yield
    except RedisError as exc:
        raise BackendUnavailable(detail) from exc
