"""The mlprod API as Python calls, sync (`Client`) and async (`AsyncClient`); needs only httpx.

Both build the same requests (`_Requests`) and read the same answers; only sending differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from mlprod_client.shrink import shrink_part

# ml_common.schemas.FINAL_STATES as the API sends them: the SDK installs without the server, so
# it cannot import them (tests/unit/test_schemas.py holds the two equal)
FINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_WAIT_S = 60.0  # the most a request may wait for its task (`Prefer: wait`, `?wait=`)
Source = Path | str | bytes
Named = Source | tuple[str, Source]  # a source, or (the name the API should keep, source)


class ApiError(Exception):
    """An error answer of the API: its HTTP status, machine-readable code and detail."""

    def __init__(self, status: int, code: str, detail: str, retry_after_s: float = 0) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail
        self.retry_after_s = retry_after_s  # from a 429's or 503's Retry-After


@dataclass(frozen=True)
class BatchProgress:
    batch_id: str
    total: int
    counts: dict[str, int]
    finished: bool
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.get(state, 0) for state in FINAL)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        body = response.json()
        code, detail = str(body.get("code", "error")), str(body.get("detail", ""))
    except ValueError:
        code, detail = "error", response.text[:200]
    retry_after = response.headers.get("Retry-After", "")
    wait = float(retry_after) if retry_after.isdigit() else 0
    raise ApiError(response.status_code, code, detail, wait)


def _json(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = _checked(response).json()
    return body


def _submitted(response: httpx.Response) -> tuple[dict[str, Any], bool]:
    """The body of an upload's answer, and whether it is the finished task (200) rather than
    its id (202)."""
    return _json(response), response.status_code == 200


def _wait_left(wait: float, started: float) -> float:
    return max(wait - (time.monotonic() - started), 0.0)


def _progress(response: httpx.Response) -> BatchProgress:
    b = _json(response)
    return BatchProgress(b["batch_id"], b["total"], b["counts"], b["finished"], b["items"])


def _file_part(item: Named, name: str | None, stack: ExitStack) -> tuple[str, Any]:
    source: Source = item[1] if isinstance(item, tuple) else item
    if isinstance(item, tuple):
        name = item[0]
    if isinstance(source, bytes):
        return name or "image", source
    path = Path(source)
    handle: BinaryIO = stack.enter_context(path.open("rb"))
    return name or path.name, handle


class _Requests:
    """The requests of each call, built once for both clients."""

    def __init__(self, api_url: str, api_key: str, timeout: float) -> None:
        self.http_args: dict[str, Any] = {
            "base_url": api_url.rstrip("/") + "/api/v1",
            "headers": {"Authorization": f"Bearer {api_key}"},
            "timeout": timeout,
        }

    @classmethod
    def detect(
        cls, image: Named, name: str | None, model: str | None, key: str | None,
        stack: ExitStack, max_side: int | None = None, min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        part = _file_part(image, name, stack)
        part, original_size = shrink_part(part, max_side) if max_side else (part, None)
        request = cls.upload("/detections", [("file", part)], model, key, min_score)
        if original_size:  # boxes come back in the photo's pixels
            request["params"] = {"original_size": original_size}
        return request

    @classmethod
    def batch(
        cls, images: Iterable[Named], model: str | None, key: str | None, stack: ExitStack,
        max_side: int | None = None, min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        parts = [_file_part(image, None, stack) for image in images]
        if not max_side:
            files = [("files", part) for part in parts]
            return cls.upload("/batches", files, model, key, min_score)
        shrunk = [shrink_part(part, max_side) for part in parts]
        files = [("files", part) for part, _ in shrunk]
        request = cls.upload("/batches", files, model, key, min_score)
        # one per file, in order; empty for a file sent whole
        request["data"] = {**(request["data"] or {}), "original_size": [s or "" for _, s in shrunk]}
        return request

    @staticmethod
    def detect_raw(
        image: Source, name: str | None, model: str | None, key: str | None, wait: float,
        stack: ExitStack, max_side: int | None = None, min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One image as the raw body, asking the API to answer once it is done (`Prefer`)."""
        part = _file_part(image, name, stack)
        (name, body), original_size = shrink_part(part, max_side) if max_side else (part, None)
        if not isinstance(body, bytes):
            body = body.read()  # one image: the async client too
        params: dict[str, Any] = {"filename": name, **({"model": model} if model else {})}
        if min_score is not None:
            params["min_score"] = min_score
        if original_size:  # boxes come back in the photo's pixels
            params["original_size"] = original_size
        headers = {"Content-Type": "application/octet-stream", "Prefer": f"wait={wait:g}"}
        return {
            "method": "POST",
            "url": "/detections",
            "content": body,
            "params": params,
            "headers": {**headers, **({"Idempotency-Key": key} if key else {})},
            "timeout": wait + 30,
        }

    @staticmethod
    def upload(
        route: str, files: list[tuple[str, Any]], model: str | None, key: str | None,
        min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        data = {"model": model} if model else {}
        if min_score is not None:
            data["min_score"] = str(min_score)
        return {
            "method": "POST",
            "url": route,
            "files": files,
            "data": data or None,
            "headers": {"Idempotency-Key": key} if key else None,
        }


class Client:
    """The sync client: `with Client(url, key) as api: api.detect("cat.jpg")`."""

    def __init__(self, api_url: str, api_key: str, timeout: float = 120) -> None:
        self._http = httpx.Client(**_Requests(api_url, api_key, timeout).http_args)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def detect(
        self, image: Source, *, name: str | None = None, model: str | None = None,
        idempotency_key: str | None = None, max_side: int | None = None,
        min_score: float | None = None,
    ) -> str:  # fmt: skip
        """Submit one image; returns its task id. With `max_side`, a photo whose long side is
        larger is shrunk to it before sending (needs Pillow); boxes still come back in the
        photo's own pixels. `min_score`: the lowest score to keep (the API's threshold, 0.3
        by default, when None; at least its ML_MIN_SCORE_FLOOR, 0.05 by default)."""
        with ExitStack() as stack:
            request = _Requests.detect(
                image, name, model, idempotency_key, stack, max_side, min_score
            )
            return str(_json(self._http.request(**request))["task_id"])

    def detect_wait(
        self, image: Source, *, wait: float = 120, name: str | None = None,
        model: str | None = None, idempotency_key: str | None = None,
        max_side: int | None = None, min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Submit one image and return its status once finished, in one request when it
        finishes within a minute (`Prefer: wait`); else waits on the task, `wait` s in all.
        The status is not final only if `wait` ran out first. `max_side` and `min_score` as
        for `detect`."""
        started = time.monotonic()
        with ExitStack() as stack:
            first = min(wait, MAX_WAIT_S)
            request = _Requests.detect_raw(
                image, name, model, idempotency_key, first, stack, max_side, min_score
            )
            body, finished = _submitted(self._http.request(**request))
        while not finished and (left := _wait_left(wait, started)) > 0:
            body = self.task(body["task_id"], wait=min(left, MAX_WAIT_S))
            finished = body["status"] in FINAL
        return body

    def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        """The task's status; with `wait`, up to that many seconds for it to finish."""
        params = {"wait": wait}
        return _json(self._http.get(f"/detections/{task_id}", params=params, timeout=wait + 30))

    def task_export(self, task_id: str, fmt: str = "jsonl") -> bytes:
        """One task as jsonl, csv or coco."""
        params = {"format": fmt}
        response = self._http.get(f"/detections/{task_id}/export", params=params)
        return _checked(response).content

    def annotated(self, task_id: str) -> bytes:
        """The task's image with its boxes drawn (JPEG)."""
        return _checked(self._http.get(f"/detections/{task_id}/image")).content

    def create_batch(
        self, images: Iterable[Named], *, model: str | None = None,
        idempotency_key: str | None = None, max_side: int | None = None,
        min_score: float | None = None,
    ) -> str:  # fmt: skip
        """Submit many images (or one zip/tar archive) as one batch; returns its id. With
        `max_side`, each photo larger than that is shrunk first, as `detect` does; `min_score`
        as for `detect`, for every image."""
        with ExitStack() as stack:
            request = _Requests.batch(images, model, idempotency_key, stack, max_side, min_score)
            return str(_json(self._http.request(**request))["batch_id"])

    def batch(self, batch_id: str, offset: int = 0, limit: int = 100) -> BatchProgress:
        params = {"offset": offset, "limit": limit}
        return _progress(self._http.get(f"/batches/{batch_id}", params=params))

    def wait_batch(
        self, batch_id: str, on_progress: Callable[[BatchProgress], None] | None = None,
        poll_s: float = 1.0,
    ) -> BatchProgress:  # fmt: skip
        """Poll the batch until every item is finished, reporting progress on the way."""
        while not (progress := self.batch(batch_id, limit=1)).finished:
            if on_progress:
                on_progress(progress)
            time.sleep(poll_s)
        return progress

    def cancel(self, task_id: str) -> dict[str, Any]:
        return _json(self._http.delete(f"/detections/{task_id}"))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return _json(self._http.delete(f"/batches/{batch_id}"))

    def export(self, batch_id: str, fmt: str = "jsonl") -> bytes:
        """The batch as jsonl, csv, coco or zip (annotated images)."""
        params = {"format": fmt}
        return _checked(self._http.get(f"/batches/{batch_id}/export", params=params)).content


class AsyncClient:
    """The async client: `async with AsyncClient(url, key) as api: await api.detect(...)`."""

    def __init__(self, api_url: str, api_key: str, timeout: float = 120) -> None:
        self._http = httpx.AsyncClient(**_Requests(api_url, api_key, timeout).http_args)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def detect(
        self, image: Source, *, name: str | None = None, model: str | None = None,
        idempotency_key: str | None = None, max_side: int | None = None,
        min_score: float | None = None,
    ) -> str:  # fmt: skip
        with ExitStack() as stack:
            args = (image, name, model, idempotency_key, stack, max_side, min_score)
            if max_side:  # shrinking a photo takes a few hundred CPU-ms: not on the loop
                request = await asyncio.to_thread(_Requests.detect, *args)
            else:
                request = _Requests.detect(*args)
            return str(_json(await self._http.request(**request))["task_id"])

    async def detect_wait(
        self, image: Source, *, wait: float = 120, name: str | None = None,
        model: str | None = None, idempotency_key: str | None = None,
        max_side: int | None = None, min_score: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """As `Client.detect_wait`."""
        started = time.monotonic()
        with ExitStack() as stack:
            first = min(wait, MAX_WAIT_S)
            args = (image, name, model, idempotency_key, first, stack, max_side, min_score)
            if max_side:  # shrinking a photo takes a few hundred CPU-ms: not on the loop
                request = await asyncio.to_thread(_Requests.detect_raw, *args)
            else:
                request = _Requests.detect_raw(*args)
            body, finished = _submitted(await self._http.request(**request))
        while not finished and (left := _wait_left(wait, started)) > 0:
            body = await self.task(body["task_id"], wait=min(left, MAX_WAIT_S))
            finished = body["status"] in FINAL
        return body

    async def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait}
        response = await self._http.get(f"/detections/{task_id}", params=params, timeout=wait + 30)
        return _json(response)

    async def create_batch(
        self, images: Sequence[Named], *, model: str | None = None,
        idempotency_key: str | None = None, max_side: int | None = None,
        min_score: float | None = None,
    ) -> str:  # fmt: skip
        with ExitStack() as stack:
            args = (images, model, idempotency_key, stack, max_side, min_score)
            if max_side:  # shrinking photos takes a few hundred CPU-ms each: not on the loop
                request = await asyncio.to_thread(_Requests.batch, *args)
            else:
                request = _Requests.batch(*args)
            return str(_json(await self._http.request(**request))["batch_id"])

    async def batch(self, batch_id: str, offset: int = 0, limit: int = 100) -> BatchProgress:
        params = {"offset": offset, "limit": limit}
        return _progress(await self._http.get(f"/batches/{batch_id}", params=params))

    async def wait_batch(self, batch_id: str, poll_s: float = 1.0) -> BatchProgress:
        while not (progress := await self.batch(batch_id, limit=1)).finished:
            await asyncio.sleep(poll_s)
        return progress

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return _json(await self._http.delete(f"/batches/{batch_id}"))

    async def export(self, batch_id: str, fmt: str = "jsonl") -> bytes:
        params = {"format": fmt}
        response = await self._http.get(f"/batches/{batch_id}/export", params=params)
        return _checked(response).content
