"""The worker's pipeline: decode, detect and annotate one image; no Celery, no storage, no Redis."""

from __future__ import annotations

import io
import time

from PIL import Image

from ml_celery.annotate import draw_detections
from ml_celery.detectors.registry import load_detector
from ml_common.images import decode_rgb
from ml_common.schemas import DetectionResult, StageTimings
from ml_common.settings import Settings


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def analyse(data: bytes, settings: Settings) -> tuple[DetectionResult, bytes]:
    """Decode, detect and annotate one image: the task's work, without storage or Redis."""
    t0 = time.perf_counter()
    image = decode_rgb(data, settings.max_image_pixels)
    decode_ms = _ms_since(t0)

    detector = load_detector(settings)
    output = detector.detect(image)

    t0 = time.perf_counter()
    buf = io.BytesIO()
    draw_detections(image, output.detections).save(buf, format="JPEG", quality=90)
    annotate_ms = _ms_since(t0)

    result = DetectionResult(
        width=image.width,
        height=image.height,
        model_name=detector.name,
        model_version=detector.version,
        inference_ms=round(output.inference_ms, 3),
        detections=output.detections,
        score_threshold=settings.score_threshold,
        timings=StageTimings(
            decode_ms=decode_ms,
            inference_ms=round(output.inference_ms, 3),
            postprocess_ms=round(output.postprocess_ms + output.preprocess_ms, 3),
            annotate_ms=annotate_ms,
        ),
    )
    return result, buf.getvalue()


def warm_up(settings: Settings) -> None:
    """Run the whole task path on made-up photos, so the first real task is as fast as any:
    decoders, pre/post-processing, the annotation font and the JPEG encoder all get loaded."""
    for size in ((640, 480), (512, 512)):
        gradient = Image.linear_gradient("L").resize(size).convert("RGB")
        buf = io.BytesIO()
        gradient.save(buf, format="JPEG")
        analyse(buf.getvalue(), settings)
