"""Domain errors raised outside the HTTP layer; ml_api.errors maps each to a status code."""


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
