"""/api/v1/models: the models this deployment serves, with how many workers have each ready."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from ml_api.deps import ApiKeyDep, SettingsDep, TasksDep
from ml_api.errors import documented
from ml_common.models import CATALOG, served_models
from ml_common.schemas import ModelList, ServedModel

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", responses=documented(401, 503))
async def list_models(key: ApiKeyDep, settings: SettingsDep, tasks: TasksDep) -> ModelList:
    """Each served model (the default first), its ready worker processes and their versions.

    An upload for a model with no ready worker is queued all the same: it runs once one starts."""
    ready = await tasks.ready_models()
    counts = Counter(entry.model for entry in ready)
    names = served_models(settings)
    models = []
    for name in names:
        spec = CATALOG.get(name)
        versions = sorted({entry.version for entry in ready if entry.model == name})
        models.append(
            ServedModel(
                name=name,
                default=name == names[0],
                ready_workers=counts[name],
                versions=versions,
                licence=spec.licence if spec else None,
                source=spec.source if spec else None,
                input_size=spec.input_size if spec else None,
                coco_ap=spec.coco_ap if spec else None,
            )
        )
    return ModelList(default=names[0], models=models)
