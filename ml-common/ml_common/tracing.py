"""OpenTelemetry tracing, off by default: one trace from the upload through the broker (W3C
`traceparent` in the task's message headers) to each worker stage.

ML_TRACING=otlp exports to ML_TRACING_ENDPOINT (OTLP over HTTP); ML_TRACING=file appends one
JSON span per line to ML_TRACING_FILE (tests, or a quick look without a collector). The SDK is
imported only when tracing is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context

from ml_common.settings import Settings

if TYPE_CHECKING:  # the worker has no Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)
TRACER = "mlprod"


def setup_tracing(settings: Settings, service: str) -> None:
    """Install the process's tracer provider, once, if tracing is on."""
    if settings.tracing == "off":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = str(settings.tracing_endpoint) if settings.tracing_endpoint else None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(_file_exporter(settings)))
    trace.set_tracer_provider(provider)
    logger.info("tracing on (%s)", settings.tracing)


def _file_exporter(settings: Settings) -> Any:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    path = settings.tracing_file or settings.storage_dir / "spans.jsonl"

    class JsonLinesExporter(SpanExporter):
        """Appends each span as one JSON line (opened per batch: nothing stays open)."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with open(path, "a") as out:
                out.write("".join(span.to_json(indent=None) + "\n" for span in spans))
            return SpanExportResult.SUCCESS

    return JsonLinesExporter()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def tracing_on() -> bool:
    """Whether this process installed a tracer provider (`setup_tracing` with tracing on):
    the worker skips making spans nobody records, on every task."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def inject_headers() -> dict[str, str]:
    """The current context as W3C headers (`traceparent`), for a task message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, Any]) -> Context:
    """The context `headers` carry, else the current one."""
    carrier = {k: str(v) for k, v in headers.items() if isinstance(v, str)}
    return propagate.extract(carrier, context=context.get_current())


def record_stages(stages: Mapping[str, float | None], end_ns: int | None = None) -> None:
    """Child spans of the current one for stages that ran back to back (milliseconds each),
    the last ending at `end_ns` (now when None)."""
    if not tracing_on():
        return
    end = end_ns or time.time_ns()
    durations = [(name, int(ms * 1e6)) for name, ms in stages.items() if ms is not None]
    start = end - sum(ns for _, ns in durations)
    for name, ns in durations:
        tracer().start_span(name, start_time=start).end(end_time=start + ns)
        start += ns


TRACE_HEADERS = ("traceparent", "tracestate")


def message_trace_headers(task: Any) -> dict[str, str]:
    """The W3C headers the running Celery task's message came with (Celery keeps a message's
    own headers as attributes of its request)."""
    request = getattr(task, "request", None)
    found = {h: getattr(request, h, None) for h in TRACE_HEADERS}
    return {h: v for h, v in found.items() if isinstance(v, str)}


class TaskSpans:
    """The worker's span of each running task, continuing the trace its message carries."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[trace.Span, object]] = {}

    def start(self, task_id: str, task: Any) -> None:
        if not tracing_on():
            return
        headers = message_trace_headers(task)
        span = tracer().start_span(
            str(getattr(task, "name", "task")),
            context=extract_context(headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={"mlprod.task_id": task_id},
        )
        token = context.attach(trace.set_span_in_context(span))
        self._open[task_id] = (span, token)

    def end(self, task_id: str) -> None:
        span, token = self._open.pop(task_id, (None, None))
        if span is not None:
            context.detach(token)  # type: ignore[arg-type]
            span.end()


class TracingMiddleware:
    """ASGI: one server span per HTTP request, continuing an incoming `traceparent`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or trace.get_current_span().get_span_context().is_valid:
            # FastAPI's own telemetry (newer versions) already opened the request's span
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        name = f"{scope['method']} {scope['path']}"
        with tracer().start_as_current_span(
            name, context=extract_context(headers), kind=trace.SpanKind.SERVER
        ) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_status)
