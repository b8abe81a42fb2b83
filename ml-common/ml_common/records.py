"""The task record: its typed fields and every `mlprod:*` Redis key.

Celery's own result meta says *what* happened; the record says that a task exists at all
(so an unknown id is a 404, not an eternal PENDING), who may see it and when it started.
The stores that read and write it are in `ml_common.taskstore`: `TaskStore` for the API
(asyncio), `RecordStore` for the worker and the retention clean-up (blocking).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

logger = logging.getLogger(__name__)

RECORD_PREFIX = "mlprod:task:"
CELERY_META_PREFIX = "celery-task-meta-"
READY_PREFIX = "mlprod:ready:"
READY_PATTERN = f"{READY_PREFIX}*"
READY_TTL_S = 30  # a worker renews its readiness key every third of this
RATE_PREFIX = "mlprod:rate"  # the API's request windows (the `limits` library adds the rest)
LOGIN_PREFIX = "mlprod:client:login"  # the web client's sign-in windows (likewise)
BATCH_PREFIX = "mlprod:batch:"
IDEMPOTENCY_PREFIX = "mlprod:idem:"
QUOTA_PREFIX = "mlprod:batchquota:"


def as_text(value: str | bytes) -> str:
    """A Redis reply as text (the clients answer bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value


def record_key(task_id: str) -> str:
    return f"{RECORD_PREFIX}{task_id}"


def meta_key(task_id: str) -> str:
    """Celery's Redis result key, which Celery also PUBLISHes on whenever it stores a state."""
    return f"{CELERY_META_PREFIX}{task_id}"


def webhook_key(task_id: str) -> str:
    """The task's webhook delivery (hash: webhook_id, url, event, body, owner, state)."""
    return f"mlprod:webhook:{task_id}"


def deliveries_key(task_id: str) -> str:
    """The attempts of the task's webhook delivery (list of JSON, oldest first)."""
    return f"mlprod:deliveries:{task_id}"


def batch_key(batch_id: str) -> str:
    """A batch (hash: owner, created_at, total; with a callback also ml_common.batchhooks')."""
    return f"{BATCH_PREFIX}{batch_id}"


def batch_items_key(batch_id: str) -> str:
    """The batch's task ids, in the order of its files."""
    return f"{BATCH_PREFIX}{batch_id}:items"


def batch_final_key(batch_id: str) -> str:
    """The task ids of a batch that are final (set; ml_common.batchhooks)."""
    return f"{BATCH_PREFIX}{batch_id}:final"


def batch_started_key(batch_id: str) -> str:
    """The task ids of a batch that a worker has started and that are not final yet (set)."""
    return f"{BATCH_PREFIX}{batch_id}:started"


def batch_events_channel(batch_id: str) -> str:
    """The channel told whenever a batch's counts change (its event streams listen on it)."""
    return f"{BATCH_PREFIX}{batch_id}:events"


def idempotency_key(owner: str, key: str) -> str:
    """One client key, scoped to the API key that sent it; the client's text is hashed."""
    return f"{IDEMPOTENCY_PREFIX}{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def quota_key(owner: str) -> str:
    """The batch items an API key submitted today."""
    return f"{QUOTA_PREFIX}{owner}"


def ready_key(host: str, pid: int, model: str = "") -> str:
    """Present while the worker process `pid` on `host` has `model` loaded; its value is the
    JSON of `ReadyModel`."""
    return f"{READY_PREFIX}{model}:{host}:{pid}" if model else f"{READY_PREFIX}{host}:{pid}"


@dataclass(frozen=True)
class ReadyModel:
    """What a worker process announces for each model it has loaded and warm."""

    model: str
    version: str

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "version": self.version})

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> ReadyModel | None:
        try:
            value = json.loads(raw or "")
            return cls(str(value["model"]), str(value["version"]))
        except (ValueError, KeyError, TypeError):
            return None  # a beacon of a worker older than per-model readiness


def session_key(session_id: str) -> str:
    """A live web-client session; the id itself is never stored."""
    return f"mlprod:client:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def history_key(user: str) -> str:
    """A web-client user's recent tasks."""
    return f"mlprod:client:history:{hashlib.sha256(user.encode()).hexdigest()[:32]}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


_OWNER = "owner"
_UPLOAD_KEY = "upload_key"
_CREATED_AT = "created_at"
QUEUED = "queued"  # set once the broker took the task; only the orphan clean-up reads it
STARTED_AT = "started_at"
_NAME = "name"  # the uploaded file's name (exports are named after it)
_BATCH_ID = "batch_id"
CANCELLED_AT = "cancelled_at"  # the durable cancel mark the worker checks before inference
_REFUSED = "refused"  # "code: detail" of a batch item refused before it was queued


@dataclass(frozen=True)
class TaskRecord:
    """One task's record, kept as a Redis hash at `record_key(task_id)`."""

    task_id: str
    owner: str
    upload_key: str
    created_at: datetime
    queued: bool = False
    started_at: datetime | None = None
    name: str = ""
    batch_id: str = ""
    cancelled_at: datetime | None = None
    refused: str = ""

    @classmethod
    def new(
        cls, task_id: str, owner: str, upload_key: str, *, name: str = "", batch_id: str = ""
    ) -> TaskRecord:
        now = datetime.now(timezone.utc)
        return cls(task_id, owner, upload_key, now, name=name, batch_id=batch_id)

    def to_hash(self) -> dict[str, str]:
        """The hash fields; the task id is in the key, and unset fields are left out."""
        fields = {
            _OWNER: self.owner,
            _UPLOAD_KEY: self.upload_key,
            _CREATED_AT: self.created_at.isoformat(),
        }
        if self.queued:
            fields[QUEUED] = "1"
        if self.started_at is not None:
            fields[STARTED_AT] = self.started_at.isoformat()
        if self.cancelled_at is not None:
            fields[CANCELLED_AT] = self.cancelled_at.isoformat()
        optional = {_NAME: self.name, _BATCH_ID: self.batch_id, _REFUSED: self.refused}
        return fields | {k: v for k, v in optional.items() if v}

    @classmethod
    def from_hash(
        cls, task_id: str, fields: Mapping[str | bytes, str | bytes]
    ) -> TaskRecord | None:
        """The record, or None when the hash lacks its owner or creation time (no task)."""
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        if _OWNER not in text or _CREATED_AT not in text:
            return None
        started, cancelled = text.get(STARTED_AT), text.get(CANCELLED_AT)
        return cls(
            task_id=task_id,
            owner=text[_OWNER],
            upload_key=text.get(_UPLOAD_KEY, ""),
            created_at=datetime.fromisoformat(text[_CREATED_AT]),
            queued=bool(text.get(QUEUED)),
            started_at=datetime.fromisoformat(started) if started else None,
            name=text.get(_NAME, ""),
            batch_id=text.get(_BATCH_ID, ""),
            cancelled_at=datetime.fromisoformat(cancelled) if cancelled else None,
            refused=text.get(_REFUSED, ""),
        )
