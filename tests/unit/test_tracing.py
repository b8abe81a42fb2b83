"""Tracing in one process: the request's span, the headers a task message gets, the task's
span that continues it and the stage spans under it share one trace id."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ml_common.settings import Settings
from ml_common.tracing import (
    TaskSpans,
    TracingMiddleware,
    inject_headers,
    message_trace_headers,
    record_stages,
    setup_tracing,
    tracing_on,
)


def test_tracing_is_off_by_default() -> None:
    setup_tracing(Settings(_env_file=None), "off")
    assert inject_headers() == {}
    assert not tracing_on()  # the worker then makes no spans at all


def test_one_trace_from_a_request_through_a_task_message_to_its_stages(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    setup_tracing(Settings(_env_file=None, tracing="file", tracing_file=spans_file), "unit")
    assert tracing_on()
    sent: dict[str, str] = {}

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        sent.update(inject_headers())  # what the API's producer puts in the message
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(_: Any) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/api/v1/detections", "headers": []}
    asyncio.run(TracingMiddleware(endpoint)(scope, receive, send))
    assert sent.get("traceparent")

    task = SimpleNamespace(name="mlprod.detect", request=SimpleNamespace(**sent))
    assert message_trace_headers(task) == {"traceparent": sent["traceparent"]}
    spans = TaskSpans()
    spans.start("t-1", task)
    record_stages({"decode": 5.0, "inference": 20.0, "postprocess": None})
    spans.end("t-1")
    spans.end("never-started")

    written = [json.loads(line) for line in spans_file.read_text().splitlines()]
    by_name = {span["name"]: span for span in written}
    assert {"POST /api/v1/detections", "mlprod.detect", "decode", "inference"} <= set(by_name)
    assert len({span["context"]["trace_id"] for span in written}) == 1
    detect = by_name["mlprod.detect"]
    assert by_name["decode"]["parent_id"] == detect["context"]["span_id"]
    assert detect["parent_id"] == by_name["POST /api/v1/detections"]["context"]["span_id"]
