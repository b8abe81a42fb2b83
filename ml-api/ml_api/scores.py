"""`min_score`: the lowest detection score an upload asks the worker to keep.

Without it a result keeps what scores at least ML_SCORE_THRESHOLD (0.3), which suits a person
looking at boxes; a user scoring results against ground truth (COCO AP counts from 0.05) asks
for lower ones, down to ML_MIN_SCORE_FLOOR.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Query

from ml_common.errors import InvalidMinScore

DESCRIPTION = (
    "the lowest detection score to keep, from ML_MIN_SCORE_FLOOR (0.05 by default) to 1; "
    "absent or empty: the deployment's threshold (ML_SCORE_THRESHOLD, 0.3)"
)
MIN_SCORE_QUERY = Annotated[float | None, Query(ge=0, le=1, description=DESCRIPTION)]
MIN_SCORE_FIELD: dict[str, Any] = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": DESCRIPTION,
}


def check_min_score(value: str | float | None, floor: float) -> float | None:
    """`value` (a form's text or a query's number) as a score in [floor, 1]; None when absent
    or empty."""
    if value is None or value == "":
        return None
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not floor <= score <= 1:  # NaN is never in range
        raise InvalidMinScore(
            f"min_score must be a number from {floor:g} (ML_MIN_SCORE_FLOOR) to 1; "
            f"got {str(value)[:40]!r}"
        )
    return score
