"""OpenTelemetry across real processes: the upload's server span in the API, the broker
(traceparent in the task's message headers), the worker's task span and its stages, and the
webhook attempt all share one trace id. Both processes append their spans to one JSON file."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest

from tests.conftest import LiveStack, launch_stack

pytestmark = pytest.mark.integration
WAIT_S = 60


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveStack, Path]]:
    base = tmp_path_factory.mktemp("traced-stack")
    spans = base / "spans.jsonl"
    env = {"ML_TRACING": "file", "ML_TRACING_FILE": str(spans),
           "ML_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}  # fmt: skip
    with launch_stack("rabbitmq-redis", base, env) as live:
        yield live, spans


class Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # the name http.server calls
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spans_of(path: Path, trace_id: str, names: set[str]) -> list[dict[str, Any]]:
    """The trace's spans, once every name in `names` has arrived (or after WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [s for s in read_spans(path) if s["context"]["trace_id"] == trace_id]
        if names <= {s["name"] for s in found} or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_one_trace_from_the_upload_to_the_worker_stages_and_the_webhook(
    traced: tuple[LiveStack, Path], astronaut_jpeg: bytes
) -> None:
    live, path = traced
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = httpx.post(
            f"{live.api_url}/api/v1/detections",
            files={"file": ("photo.jpg", astronaut_jpeg, "image/jpeg")},
            data={"callback_url": f"http://127.0.0.1:{server.server_address[1]}/hook"},
            headers=live.headers(),
            timeout=30,
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        live.wait_final(task_id)
        [upload] = [s for s in read_spans(path) if s["name"] == "POST /api/v1/detections"
                    and s["attributes"].get("http.response.status_code") == 202]  # fmt: skip
        trace_id = upload["context"]["trace_id"]
        names = {"mlprod.detect", "decode", "inference", "postprocess", "mlprod.webhook"}
        found = spans_of(path, trace_id, names)
    finally:
        server.shutdown()
        server.server_close()
    assert names <= {s["name"] for s in found}
    [detect] = [s for s in found if s["name"] == "mlprod.detect"]
    assert detect["attributes"]["mlprod.task_id"] == task_id
    api_spans = {s["context"]["span_id"] for s in found
                 if s["resource"]["attributes"]["service.name"] == "mlprod-api"}  # fmt: skip
    assert detect["parent_id"] in api_spans  # the request's span, or one inside it
    assert detect["resource"]["attributes"]["service.name"] == "mlprod-worker"
    assert upload["resource"]["attributes"]["service.name"] == "mlprod-api"
    stages = [s for s in found if s["name"] in ("decode", "inference", "postprocess")]
    assert all(s["parent_id"] == detect["context"]["span_id"] for s in stages)
