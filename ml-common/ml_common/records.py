"""The task record kept next to Celery's result in Redis: owner, keys and timestamps.

Celery's own result meta says *what* happened; the record says that a task exists at all
(so an unknown id is a 404, not an eternal PENDING), who may see it and when it started.
"""

from __future__ import annotations

from datetime import datetime, timezone

RECORD_PREFIX = "mlprod:task:"
CELERY_META_PREFIX = "celery-task-meta-"

OWNER = "owner"
UPLOAD_KEY = "upload_key"
ANNOTATED_KEY = "annotated_key"
CREATED_AT = "created_at"
STARTED_AT = "started_at"
FINISHED_AT = "finished_at"


def record_key(task_id: str) -> str:
    return f"{RECORD_PREFIX}{task_id}"


def meta_key(task_id: str) -> str:
    """Celery's Redis result key, which Celery also PUBLISHes on whenever it stores a state."""
    return f"{CELERY_META_PREFIX}{task_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


QUEUED = "queued"  # set once the broker took the task
