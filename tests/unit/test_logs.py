"""Log lines: JSON with the task's and the trace's ids, or the human format."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from ml_common.logs import JsonLines, configure_logging, log_context, set_log_context
from ml_common.settings import Settings


def _line(message: str, **extra: str) -> dict[str, object]:
    record = logging.LogRecord("mlprod.test", logging.INFO, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(record, name, value)
    parsed: dict[str, object] = json.loads(JsonLines().format(record))
    return parsed


def test_a_line_is_one_json_object_with_the_task_id() -> None:
    line = _line("queued", task_id="t-1", batch_id="b-1")
    assert line["msg"] == "queued"
    assert line["level"] == "INFO"
    assert (line["task_id"], line["batch_id"]) == ("t-1", "b-1")


def test_celerys_own_lines_name_their_task() -> None:
    args = {"id": "t-9", "name": "mlprod.detect"}
    record = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1,
                               "Task %(name)s[%(id)s] succeeded", (args,), None)  # fmt: skip
    line = json.loads(JsonLines().format(record))
    assert line["task_id"] == "t-9"
    assert line["msg"] == "Task mlprod.detect[t-9] succeeded"


def test_the_context_names_the_task_of_every_line_inside_it() -> None:
    with log_context(task_id="t-2", batch_id=""):
        inside = _line("decoded")
    assert inside["task_id"] == "t-2"
    assert "batch_id" not in inside
    assert "task_id" not in _line("after")
    set_log_context(task_id="t-3")
    assert _line("worker")["task_id"] == "t-3"
    set_log_context()
    assert "task_id" not in _line("worker")


def test_an_active_span_puts_its_trace_id_on_the_line() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("upload") as span:
        line = _line("in a span")
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "trace_id" not in _line("outside")


def test_an_exception_is_kept_on_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonLines().format(record))["exc"]


@pytest.mark.parametrize(
    ("environment", "log_format", "json_lines"),
    [("development", None, False), ("production", None, True), ("development", "json", True),
     ("production", "text", False)],
)  # fmt: skip
def test_json_in_production_unless_told(
    environment: str, log_format: str | None, json_lines: bool
) -> None:
    settings = Settings(_env_file=None, environment=environment, log_format=log_format,
                        secret_key="a-real-secret-for-tests-0123456789")  # fmt: skip
    assert settings.json_logs is json_lines


def test_configure_logging_switches_the_format_of_its_one_handler() -> None:
    root = logging.getLogger()
    configure_logging("INFO", json_lines=True)
    ours = [h for h in root.handlers if getattr(h, "_mlprod", False)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonLines)
    configure_logging("INFO")
    ours = [h for h in root.handlers if getattr(h, "_mlprod", False)]
    assert len(ours) == 1 and not isinstance(ours[0].formatter, JsonLines)
