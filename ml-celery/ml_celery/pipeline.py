"""The worker's pipeline: decode and detect one image; no Celery, no storage, no Redis.

The annotated image is not drawn here: the API renders it on the first request for it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

from PIL import Image

from ml_celery.decode import decode_for_model
from ml_celery.detectors.registry import load_detector
from ml_common.schemas import DetectionResult, StageTimings
from ml_common.settings import Settings


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _whole(width: int, height: int) -> tuple[int, int]:
    return width, height


def to_original_size(result: DetectionResult, original_size: Sequence[int]) -> DetectionResult:
    """`result` of an image the client shrank from a photo of `original_size` (checked by the
    API: the same shape, never smaller): boxes in the photo's pixels, and both sizes said."""
    width, height = original_size
    sx, sy = width / result.width, height / result.height
    detections = [d.scaled(sx, sy) for d in result.detections]
    return result.model_copy(update={
        "width": width, "height": height, "detections": detections,
        "processed_width": result.width, "processed_height": result.height,
    })  # fmt: skip


def analyse(
    data: bytes, settings: Settings, *, reduced: bool = True, model: str | None = None,
    original_size: Sequence[int] | None = None, min_score: float | None = None,
) -> DetectionResult:  # fmt: skip
    """Decode and detect one image with `model` (default: the deployment's default): the
    task's work, without storage or Redis. The image is decoded only as large as the model
    needs, unless `reduced` is False (full decoding, kept to check the reduced decode
    against); boxes are in the original's pixels either way, and in those of
    `original_size` when the client shrank the photo to send it. Detections scored under
    `min_score` (checked by the API; None: ML_SCORE_THRESHOLD) are dropped."""
    detector = load_detector(settings, model)
    t0 = time.perf_counter()
    needed_size = detector.needed_size if reduced else _whole
    decoded = decode_for_model(data, settings.max_image_pixels, needed_size)
    decode_ms = _ms_since(t0)

    output = detector.detect(decoded.image, decoded.source, min_score)
    result = DetectionResult(
        width=decoded.source.width,
        height=decoded.source.height,
        model_name=detector.name,
        model_version=detector.version,
        inference_ms=round(output.inference_ms, 3),
        detections=output.detections,
        score_threshold=settings.score_threshold if min_score is None else min_score,
        timings=StageTimings(
            decode_ms=decode_ms,
            inference_ms=round(output.inference_ms, 3),
            postprocess_ms=round(output.postprocess_ms + output.preprocess_ms, 3),
        ),
    )
    return to_original_size(result, original_size) if original_size else result


def warm_up(settings: Settings, model: str | None = None) -> None:
    """Run the whole task path on made-up photos, so the first real task is as fast as any:
    the decoders (JPEG at full and at reduced scale, PNG) and pre/post-processing get loaded."""
    for size, fmt in (((640, 480), "JPEG"), ((1664, 1248), "JPEG"), ((512, 512), "PNG")):
        gradient = Image.linear_gradient("L").resize(size).convert("RGB")
        buf = io.BytesIO()
        gradient.save(buf, format=fmt)
        analyse(buf.getvalue(), settings, model=model)
