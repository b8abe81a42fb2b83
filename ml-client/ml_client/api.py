"""The web client's side of the detection API: an ordinary HTTP client holding the API key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from pydantic import ValidationError

from ml_client.errors import UpstreamError
from ml_common.apikeys import ON_BEHALF_HEADER
from ml_common.schemas import (
    BatchCreated,
    BatchStatus,
    ErrorOut,
    Links,
    ModelList,
    TaskCreated,
    TaskStatus,
)

logger = logging.getLogger(__name__)

DETECTIONS = "api/v1/detections"
BATCHES = "api/v1/batches"
MODELS = "api/v1/models"
# (file name, bytes, media type): one file part of a multipart upload
FilePart = tuple[str, bytes, str]
# The API ends an event stream after its own timeout; never cut it short while it waits.
EVENTS_TIMEOUT = httpx.Timeout(10.0, read=None)


def client_links(task_id: str) -> Links:
    """Links to the web client's own endpoints for a task (the browser never sees the API)."""
    base = f"/app/tasks/{task_id}"
    return Links(self=base, image=f"{base}/image", events=f"{base}/events")


def _unreachable(exc: Exception) -> UpstreamError:
    logger.warning("the API is unreachable: %s", exc)
    return UpstreamError(
        503, "api_unavailable", "the detection service cannot be reached; try again shortly"
    )


async def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    await response.aread()
    if response.status_code in (401, 403):
        logger.error(
            "the API refused the web client's key (ML_CLIENT_API_KEY; it is created with "
            "`mlprod api-key create NAME --delegate`): %s",
            response.text,
        )
        raise UpstreamError(
            502, "api_key_refused", "the web client is not allowed to use the detection service"
        )
    try:
        error = ErrorOut.model_validate_json(response.content)
    except ValidationError:
        error = ErrorOut(code="api_error", detail=f"the detection service answered {response}")
    status = response.status_code
    if status >= 500:
        logger.warning("the API answered %s to %s: %s", status, response.url.path, error.detail)
        status = 503
    raise UpstreamError(status, error.code, error.detail)


def _fields(**values: str | None) -> dict[str, str]:
    """The form fields that have a value."""
    return {name: value for name, value in values.items() if value}


class DetectionApi:
    """Submit images and read results through the API as one web user, translating its errors
    to ours: the API keeps each user's tasks apart (``X-On-Behalf-Of``, docs/web-client.md)."""

    def __init__(self, http: httpx.AsyncClient, user: str) -> None:
        self.http = http
        self.headers = {ON_BEHALF_HEADER: user}

    async def _get(self, path: str) -> httpx.Response:
        try:
            # the image may be a redirect to the bucket (ML_STORAGE_PRESIGN_S); httpx sends
            # the API key to the API's own origin only
            response = await self.http.get(path, headers=self.headers, follow_redirects=True)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc
        await _raise_for_error(response)
        return response

    async def _post(
        self, path: str, files: list[tuple[str, FilePart]], model: str | None,
        fields: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        data = ({"model": model} if model else {}) | (fields or {})
        try:
            response = await self.http.post(path, files=files, data=data, headers=self.headers)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc
        await _raise_for_error(response)
        return response

    async def submit(
        self, filename: str, data: bytes, media_type: str, model: str | None = None,
        original_size: str | None = None, min_score: str | None = None,
    ) -> TaskCreated:  # fmt: skip
        """Submit one image; `original_size` (WIDTHxHEIGHT) when the page shrank the photo,
        `min_score` when the page asked for lower scores than the API's threshold."""
        fields = _fields(original_size=original_size, min_score=min_score)
        part = ("file", (filename, data, media_type))
        response = await self._post(DETECTIONS, [part], model, fields)
        created = TaskCreated.model_validate_json(response.content)
        return created.model_copy(update={"links": client_links(created.task_id)})

    async def create_batch(
        self, files: list[FilePart], model: str | None, min_score: str | None = None
    ) -> BatchCreated:
        parts = [("files", f) for f in files]
        response = await self._post(BATCHES, parts, model, _fields(min_score=min_score))
        return BatchCreated.model_validate_json(response.content)

    async def batch(self, batch_id: str, limit: int = 100) -> BatchStatus:
        response = await self._get(f"{BATCHES}/{batch_id}?limit={limit}")
        return BatchStatus.model_validate_json(response.content)

    async def export_task(self, task_id: str, fmt: str) -> bytes:
        return (await self._get(f"{DETECTIONS}/{task_id}/export?format={fmt}")).content

    async def export_batch(self, batch_id: str, fmt: str) -> bytes:
        return (await self._get(f"{BATCHES}/{batch_id}/export?format={fmt}")).content

    async def models(self) -> ModelList:
        return ModelList.model_validate_json((await self._get(MODELS)).content)

    async def status(self, task_id: str) -> TaskStatus:
        response = await self._get(f"{DETECTIONS}/{task_id}")
        status = TaskStatus.model_validate_json(response.content)
        return status.model_copy(update={"links": client_links(task_id)})

    async def image(self, task_id: str) -> bytes:
        return (await self._get(f"{DETECTIONS}/{task_id}/image")).content

    async def open_events(self, task_id: str) -> httpx.Response:
        """Open the task's event stream; errors surface here, before any event is sent."""
        return await self.open_stream(f"{DETECTIONS}/{task_id}/events")

    async def open_stream(self, path: str) -> httpx.Response:
        """Open a server-sent event stream of the API at `path`."""
        request = self.http.build_request(
            "GET",
            path,
            headers={**self.headers, "Accept": "text/event-stream"},
            timeout=EVENTS_TIMEOUT,
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unreachable(exc) from exc
        try:
            await _raise_for_error(response)
        except UpstreamError:
            await response.aclose()
            raise
        return response


async def relay_events(response: httpx.Response, task_id: str) -> AsyncIterator[str]:
    """Re-emit the API's server-sent events, with links pointing at the web client."""
    try:
        event, data = "message", ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                if event == "status":
                    status = TaskStatus.model_validate_json(data)
                    links = client_links(task_id)
                    data = status.model_copy(update={"links": links}).model_dump_json()
                yield f"event: {event}\ndata: {data}\n\n"
                event, data = "message", ""
    except httpx.TransportError as exc:
        _unreachable(exc)
        yield 'event: error\ndata: {"code":"api_unavailable","detail":"the stream broke"}\n\n'
    finally:
        await response.aclose()
