"""Liveness and readiness probes."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ml_api.deps import QueueDep, SettingsDep, StorageDep, TasksDep
from ml_common.errors import (
    BackendUnavailable,
    QueueUnavailable,
    StorageMisconfigured,
    StorageUnavailable,
)
from ml_common.models import served_models
from ml_common.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health}})
async def readyz(
    queue: QueueDep, tasks: TasksDep, settings: SettingsDep, storage: StorageDep
) -> JSONResponse:
    """Broker, result store and storage reachable, and at least one worker has its model
    loaded; each served model's ready workers are listed (a model without any still takes
    uploads)."""
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(storage.check)  # a probe written and deleted: uploads need that
        checks["storage"] = "ok"
    except (StorageUnavailable, StorageMisconfigured) as exc:
        checks["storage"] = exc.detail
    try:
        await run_in_threadpool(queue.ping)
        checks["broker"] = "ok"
    except QueueUnavailable as exc:
        checks["broker"] = exc.detail
    try:
        workers = await tasks.ready_workers()
        checks["result_backend"] = "ok"
        checks["workers"] = f"{workers} ready" if workers else "no worker with a loaded model"
        per_model = Counter(entry.model for entry in await tasks.ready_models())
        for name in served_models(settings):
            count = per_model[name]
            checks[f"model {name}"] = f"{count} ready" if count else "no worker: uploads wait"
    except BackendUnavailable as exc:
        checks["result_backend"] = f"unreachable: {exc.__cause__}"
        checks["workers"] = "unknown"
    reachable = checks["broker"] == checks["result_backend"] == checks["storage"] == "ok"
    ready = reachable and checks["workers"].endswith("ready")
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
