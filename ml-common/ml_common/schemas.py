"""Pydantic models for everything that crosses a process boundary."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from ml_common.settings import DEFAULT_SCORE_THRESHOLD


class TaskState(str, Enum):
    queued = "queued"
    started = "started"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


# the states a task never leaves; the web page reads them from its template (ml_client.pages)
FINAL_STATES = (TaskState.succeeded, TaskState.failed, TaskState.cancelled)


class Box(BaseModel):
    """An axis-aligned box; pixels in `box`, 0..1 fractions of the image in `box_normalized`."""

    model_config = ConfigDict(frozen=True)

    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Detection(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    class_id: int = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0)
    box: Box
    box_normalized: Box

    def scaled(self, sx: float, sy: float) -> Detection:
        """The same detection on the image resized by `sx` and `sy` (fractions unchanged)."""
        b = self.box
        box = Box(x_min=b.x_min * sx, y_min=b.y_min * sy, x_max=b.x_max * sx, y_max=b.y_max * sy)
        return self.model_copy(update={"box": box})


class StageTimings(BaseModel):
    """Milliseconds spent in each stage of one task, measured where the stage ran."""

    queue_wait_ms: float | None = None
    decode_ms: float | None = None
    inference_ms: float | None = None
    postprocess_ms: float | None = None
    annotate_ms: float | None = None


class DetectionResult(BaseModel):
    """A task's result; `width` and `height` are the photo's, in whose pixels the boxes are.

    When the client shrank the photo before sending it (`original_size`), `width`/`height` are
    the original's and `processed_width`/`processed_height` the size of the image received and
    analysed; both are None when the image sent was the photo itself."""

    width: int
    height: int
    model_name: str
    model_version: str
    inference_ms: float
    detections: list[Detection]
    timings: StageTimings = StageTimings()
    # the minimum score the worker kept; results stored before it was reported used the default
    score_threshold: float = Field(DEFAULT_SCORE_THRESHOLD, ge=0.0, le=1.0)
    processed_width: int | None = None
    processed_height: int | None = None

    def processed_detections(self) -> list[Detection]:
        """The detections in the pixels of the image received (the stored upload), which are
        the photo's unless the client shrank it."""
        if self.processed_width is None or self.processed_height is None:
            return self.detections
        sx, sy = self.processed_width / self.width, self.processed_height / self.height
        return [d.scaled(sx, sy) for d in self.detections]


class Links(BaseModel):
    self: str
    image: str
    events: str


class TaskCreated(BaseModel):
    task_id: str
    status: TaskState
    links: Links


class TaskError(BaseModel):
    type: str
    message: str


class TaskStatus(BaseModel):
    task_id: str
    status: TaskState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: DetectionResult | None = None
    error: TaskError | None = None
    links: Links


class Cancelled(BaseModel):
    """The answer to a cancel: `changed` is False when everything was already finished."""

    changed: bool
    detail: str


class BatchLinks(BaseModel):
    self: str
    events: str
    export: str


class BatchCreated(BaseModel):
    batch_id: str
    total: int
    links: BatchLinks


class BatchItem(BaseModel):
    task_id: str
    file_name: str
    status: TaskState
    error: TaskError | None = None


class BatchStatus(BaseModel):
    batch_id: str
    created_at: datetime
    total: int
    counts: dict[TaskState, int]
    finished: bool
    items: list[BatchItem]
    offset: int
    limit: int
    links: BatchLinks


class ErrorOut(BaseModel):
    """The body of every error response."""

    code: str
    detail: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class ServedModel(BaseModel):
    """A model this deployment serves, and the worker processes that have it loaded now."""

    name: str
    default: bool
    ready_workers: int
    versions: list[str]  # the versions those processes run (two during a rolling update)
    licence: str | None = None
    source: str | None = None
    input_size: int | None = None
    coco_ap: float | None = None  # COCO val2017 box AP as published upstream


class ModelList(BaseModel):
    default: str
    models: list[ServedModel]


class DeliveryAttempt(BaseModel):
    """One attempt at a webhook delivery: when, the receiver's status, and what went wrong."""

    number: int
    at: datetime
    status_code: int | None
    error: str
    duration_ms: float


class DeliveryLog(BaseModel):
    """A webhook: its id (the same on every attempt), target, event, state and attempts."""

    webhook_id: str
    url: str
    event: str
    state: str  # pending, delivered, failed
    attempts: list[DeliveryAttempt]


class Deliveries(DeliveryLog):
    """A task's webhook (detection.succeeded, detection.failed or detection.cancelled)."""

    task_id: str


class BatchDeliveries(DeliveryLog):
    """A batch's one webhook, `batch.completed`, sent when its last item ended."""

    batch_id: str


class WebhookSecret(BaseModel):
    """The key's Standard Webhooks secret: verify each delivery's `webhook-signature` with it."""

    secret: str
