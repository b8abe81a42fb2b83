"""The web client's own response models; task data itself uses ml_common.schemas."""

from __future__ import annotations

from pydantic import BaseModel

from ml_common.schemas import ErrorOut, TaskStatus


class HistoryEntry(BaseModel):
    """One upload in a user's history, as stored."""

    task_id: str
    filename: str
    submitted_at: str
    batch_id: str | None = None  # sent as an item of this batch (its exports stay reachable)
    compare_id: str | None = None  # one of the uploads that compare the models on one photo


class HistoryItem(HistoryEntry):
    """A history entry with the task's current state, or why it cannot be read."""

    status: TaskStatus | None = None
    error: ErrorOut | None = None


class TaskList(BaseModel):
    tasks: list[HistoryItem]
