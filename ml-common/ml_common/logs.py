"""Process-wide logging set-up, called once per process (API lifespan, worker signal, CLI).

Two formats: the human one (`make run`, development) and JSON lines (production, or
ML_LOG_FORMAT=json), where every line about a task carries its `task_id` (and `batch_id`
when it has one) and, while a trace is active, its `trace_id` and `span_id`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from types import MappingProxyType

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
CONTEXT_FIELDS = ("task_id", "batch_id")
# what the running task is about (the worker sets it around each task); a record's own
# `extra={"task_id": ...}` wins
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "mlprod_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Every line logged inside carries `fields` (empty values are left out)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(**fields: str) -> None:
    """Replace the context, for code that starts and ends in two signal handlers (a worker
    process runs one task at a time); no fields clears it."""
    _context.set({k: v for k, v in fields.items() if v})


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover  # the API package is a base dependency
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, task and trace ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
            **_context.get(),
            **_trace_ids(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                line[name] = str(value)
        if "task_id" not in line and record.name.startswith("celery."):
            # Celery's own lines (received, succeeded, failed) carry the id in their arguments
            args = record.args if isinstance(record.args, Mapping) else {}
            if args.get("id"):
                line["task_id"] = str(args["id"])
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_mlprod", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._mlprod = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(FORMAT))
    root.setLevel(level)
