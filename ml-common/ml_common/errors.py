"""Domain errors raised outside the HTTP layer, each with its code and HTTP status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError


class MLProdError(Exception):
    """Base class; `code` is the machine-readable name clients see, `status` the HTTP status."""

    code = "error"
    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskNotFound(MLProdError):
    code = "task_not_found"
    status = 404


class BatchNotFound(MLProdError):
    code = "batch_not_found"
    status = 404


class IdempotencyConflict(MLProdError):
    """The Idempotency-Key was used before with a different request body."""

    code = "idempotency_key_reused"
    status = 409


class UnsafeArchive(MLProdError):
    """An archive with escaping paths, links, or a compression ratio past the bomb limit."""

    code = "unsafe_archive"
    status = 422


class EmptyBatch(MLProdError):
    code = "empty_batch"
    status = 422


class BatchTooLarge(MLProdError):
    code = "batch_too_large"
    status = 413


class TaskNotFinished(MLProdError):
    code = "task_not_finished"
    status = 409


class InvalidImage(MLProdError):
    code = "invalid_image"
    status = 422


class UnsupportedMedia(MLProdError):
    code = "unsupported_media_type"
    status = 415


class InvalidOriginalSize(MLProdError):
    """`original_size` is malformed, smaller than the image sent, of another shape, or too big."""

    code = "invalid_original_size"
    status = 422


class UnknownModel(MLProdError):
    code = "unknown_model"
    status = 422


class InvalidMinScore(MLProdError):
    """`min_score` is not a number, or lies outside ML_MIN_SCORE_FLOOR to 1."""

    code = "invalid_min_score"
    status = 422


class InvalidCallbackUrl(MLProdError):
    """Not http(s), too long, or with credentials in it: refused before anything is stored."""

    code = "invalid_callback_url"
    status = 422


class UnsafeWebhookTarget(MLProdError):
    """A callback whose host resolves to an address the worker may not call (loopback,
    private, link-local, metadata) unless the operator allow-listed it."""

    code = "unsafe_webhook_target"
    status = 422


class NoWebhook(MLProdError):
    code = "no_webhook"
    status = 404


class PayloadTooLarge(MLProdError):
    code = "payload_too_large"
    status = 413


class ImageTooLarge(MLProdError):
    code = "image_too_large"
    status = 422


class ExtremeAspectRatio(ImageTooLarge):
    """Too long for its width (or the reverse): refused like an image too large."""

    code = "extreme_aspect_ratio"


class QueueUnavailable(MLProdError):
    code = "queue_unavailable"
    status = 503


class StorageUnavailable(MLProdError):
    """The store (folder or bucket) failed in a way that may pass: retry later."""

    code = "storage_unavailable"
    status = 503


class StorageMisconfigured(MLProdError):
    """Wrong credentials, a missing bucket or an unwritable folder: stops a process at start."""

    code = "storage_misconfigured"
    status = 503


class BackendUnavailable(MLProdError):
    code = "result_backend_unavailable"
    status = 503


class DetectorUnavailable(MLProdError):
    code = "detector_unavailable"
    status = 503


class NotAuthenticated(MLProdError):
    code = "not_authenticated"
    status = 401


class NotAllowed(MLProdError):
    """Authenticated, but this key may not do what it asked (act on behalf of others)."""

    code = "not_allowed"
    status = 403


class RateLimited(MLProdError):
    code = "rate_limited"
    status = 429

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyWaits(MLProdError):
    """The key already holds as many open long-polls and event streams as it may."""

    code = "too_many_waits"
    status = 429


class BadRequest(MLProdError):
    code = "bad_request"
    status = 400


class Forbidden(MLProdError):
    code = "forbidden"
    status = 403


class NotFound(MLProdError):
    """No such route or file (a task or batch that is not there has its own error)."""

    code = "not_found"
    status = 404


class MethodNotAllowed(MLProdError):
    code = "method_not_allowed"
    status = 405


class ValidationFailed(MLProdError):
    """The request's fields or parameters do not match what the route declares."""

    code = "validation_error"
    status = 422


# the error each bare HTTP status of the web framework (routing, parsing) stands for
_FOR_HTTP_STATUS = {
    cls.status: cls
    for cls in (
        BadRequest,
        NotAuthenticated,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMedia,
        ValidationFailed,
        RateLimited,
    )
}


def code_for_status(status: int) -> str:
    """The error code of a bare HTTP status the framework raised ("http_error" for others)."""
    found = _FOR_HTTP_STATUS.get(status)
    return found.code if found is not None else "http_error"


@contextmanager
def backend_errors(
    detail: str = "the result store is unreachable; try again shortly",
) -> Iterator[None]:
    """Turn a Redis failure (of the blocking or the asyncio client) into BackendUnavailable."""
    try:
        yield
    except RedisError as exc:
        raise BackendUnavailable(detail) from exc
