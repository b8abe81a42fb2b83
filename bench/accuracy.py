"""COCO AP of the worker's code path against full decoding, on ../shared/eval/coco-val2017-158.

`worker` runs the pipeline's `analyse()` on the uploaded bytes (decoding only what the model
needs); `full` decodes the whole image with Pillow, then runs the detector on it. Both at score
threshold 0.05 and at most 100 boxes, on the set as published and on the set upscaled to
12 MP (so that the reduced decode is what gets measured; boxes are mapped back to the original
scale, where the ground truth is). pycocotools computes AP; the JSON goes to bench/results/.
Each of `--models` (default: YOLOX-Nano, the default model, and NanoDet-g) is measured on the
same upscaled bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT.parent / "shared" / "eval" / "coco-val2017-158"
TWELVE_MP = 12_000_000

from ml_celery.detectors.registry import load_detector  # noqa: E402
from ml_celery.pipeline import analyse  # noqa: E402
from ml_common.coco import COCO_80_TO_91  # noqa: E402
from ml_common.images import decode_rgb  # noqa: E402
from ml_common.schemas import Detection  # noqa: E402
from ml_common.settings import Settings  # noqa: E402

logger = logging.getLogger("bench.accuracy")

Detect = Callable[[bytes], list[Detection]]


def detectors(settings: Settings) -> dict[str, Detect]:
    def worker(data: bytes) -> list[Detection]:
        result: Any = analyse(data, settings)
        if isinstance(result, tuple):  # (result, annotated JPEG) before lazy annotation
            result = result[0]
        return list(result.detections)

    def full(data: bytes) -> list[Detection]:
        image = decode_rgb(data, settings.max_image_pixels)
        return list(load_detector(settings).detect(image).detections)

    return {"worker": worker, "full": full}


def upscaled(path: Path) -> tuple[bytes, float, float]:
    """The photo at 12 MP (same aspect) as JPEG q90, and its scale in x and y."""
    with Image.open(path) as img:
        scale = math.sqrt(TWELVE_MP / (img.width * img.height))
        size = (round(img.width * scale), round(img.height * scale))
        big = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=90)
        return buf.getvalue(), size[0] / img.width, size[1] / img.height


def inputs(path: Path, variant: str) -> tuple[bytes, float, float]:
    if variant == "12mp":
        return upscaled(path)
    return path.read_bytes(), 1.0, 1.0


def as_coco(image_id: int, dets: list[Detection], sx: float, sy: float) -> Iterator[dict[str, Any]]:
    for det in dets:
        b = det.box
        yield {
            "image_id": image_id,
            "category_id": COCO_80_TO_91[det.class_id],
            "bbox": [
                b.x_min / sx,
                b.y_min / sy,
                (b.x_max - b.x_min) / sx,
                (b.y_max - b.y_min) / sy,
            ],
            "score": det.score,
        }


def coco_ap(gt: Any, results: list[dict[str, Any]], image_ids: list[int]) -> dict[str, float]:
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    names = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    return {name: round(float(value), 4) for name, value in zip(names, stats, strict=False)}


def model_paths(models: list[str]) -> dict[str, Detect]:
    """ "<model> worker" and "<model> full" for each model."""
    paths: dict[str, Detect] = {}
    for model in models:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, models=[model], score_threshold=0.05, max_detections=100
        )
        paths |= {f"{model} {name}": fn for name, fn in detectors(settings).items()}
    return paths


def evaluate(variants: list[str], limit: int | None, models: list[str]) -> dict[str, Any]:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(EVAL_DIR / "annotations.json"))
    images = sorted(gt.dataset["images"], key=lambda i: i["id"])[:limit]
    image_ids = [image["id"] for image in images]
    paths = model_paths(models)
    report: dict[str, Any] = {}
    for variant in variants:
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        for i, image in enumerate(images):
            data, sx, sy = inputs(EVAL_DIR / "images" / image["file_name"], variant)
            for name, detect in paths.items():
                results[name].extend(as_coco(image["id"], detect(data), sx, sy))
            if i % 20 == 0:
                logger.info("%s: %d/%d images", variant, i + 1, len(images))
        ap = {name: coco_ap(gt, res, image_ids) for name, res in results.items()}
        report[variant] = {
            model: {
                "worker": ap[f"{model} worker"],
                "full": ap[f"{model} full"],
                "worker_minus_full_AP": round(
                    ap[f"{model} worker"]["AP"] - ap[f"{model} full"]["AP"], 4
                ),
            }
            for model in models
        }
    return {"images": len(images), "score_threshold": 0.05, "max_detections": 100, **report}


def table(report: dict[str, Any]) -> str:
    head = "| model | set | worker path AP | full decoding AP | difference | AP50 worker / full |"
    lines = [head]
    lines.append("|---|---|---|---|---|---|")
    for variant in ("original", "12mp"):
        for model, r in report.get(variant, {}).items():
            lines.append(
                f"| {model} | {variant} | {r['worker']['AP']:.3f} | {r['full']['AP']:.3f} | "
                f"{r['worker_minus_full_AP']:+.4f} | "
                f"{r['worker']['AP50']:.3f} / {r['full']['AP50']:.3f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    parser.add_argument("--variants", nargs="+", default=["original", "12mp"])
    parser.add_argument("--models", nargs="+", default=["yolox-nano", "nanodet-g-416"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    report["loadavg_at_start"] = os.getloadavg()
    report |= evaluate(args.variants, args.limit, args.models)
    report["loadavg_at_end"] = os.getloadavg()
    out = ROOT / "bench" / "results" / f"accuracy-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n\n" + table(report) + "\n")
    logger.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
