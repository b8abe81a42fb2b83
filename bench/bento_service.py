"""BentoML 1.4 serving mlprod's model and `analyse()` code: a sync endpoint and a task queue.

Runs in bench/.venv-bentoml (`make bench-peers` builds it), never in the project's venv:
`bentoml serve bento_service:Detect` with PYTHONPATH naming ml-common, ml-celery and bench/.
Each of the service's worker processes loads the model once and warms it up, as mlprod's do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bentoml  # type: ignore[import-not-found]

from ml_celery.pipeline import analyse, warm_up
from ml_common.settings import Settings

WORKERS = int(os.environ.get("BENCH_BENTO_WORKERS", "2"))
THREADS = int(os.environ.get("ML_INTRA_OP_THREADS", "1"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 120})
class Detect:
    def __init__(self) -> None:
        self.settings = Settings(_env_file=None, intra_op_threads=THREADS)  # type: ignore[call-arg]
        warm_up(self.settings)

    def _run(self, image: Path) -> dict[str, Any]:
        result: Any = analyse(image.read_bytes(), self.settings)
        if isinstance(result, tuple):  # (result, annotated JPEG) before lazy annotation
            result = result[0]
        out: dict[str, Any] = result.model_dump(mode="json")
        return out

    @bentoml.api
    def analyse(self, image: Path) -> dict[str, Any]:
        """The sync endpoint: the response carries the result."""
        return self._run(image)

    @bentoml.task
    def analyse_task(self, image: Path) -> dict[str, Any]:
        """The task queue: POST /analyse_task/submit, then GET /analyse_task/status and /get."""
        return self._run(image)
