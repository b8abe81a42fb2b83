"""`make eval`: COCO AP of each served model through the worker's own code path, side by side.

Each model runs on ../shared/eval/coco-val2017-158 through `analyse()` (the task's reduced
decode, pre- and post-processing), at score threshold 0.01 and at most 100 boxes, as COCO's
evaluation expects; pycocotools gives AP, AP50, AP75 and AP for small/medium/large objects.
Also: images/s and ms per image here (one process, the runtime's own threads), and what each
model reports on the sample photos at the serving threshold (false labels show up there).
NanoDet-g is measured letterboxed (what it serves) and stretched. JSON into bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import runinfo  # noqa: E402
from accuracy import EVAL_DIR, as_coco, coco_ap  # noqa: E402

from ml_celery.detectors.registry import load_detector  # noqa: E402
from ml_celery.pipeline import analyse  # noqa: E402
from ml_common.models import CATALOG, model_folder  # noqa: E402
from ml_common.settings import DEFAULT_SCORE_THRESHOLD, Settings  # noqa: E402

logger = logging.getLogger("bench.eval")
EVAL_THRESHOLD = 0.01  # low, as COCO evaluation wants (YOLOX's own uses 0.001)
PHOTOS = ("astronaut", "coffee", "chelsea")


def model_settings(model: str, threshold: float) -> Settings:
    base = Settings()  # ML_MODEL_DIRS / ML_MODELS_DIR / ML_MODEL_DIR say where the files are
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        models=[model],
        model_dirs={model: model_folder(base, model)},
        score_threshold=threshold,
        max_detections=100,
    )


def run_set(model: str, images: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float]]:
    settings = model_settings(model, EVAL_THRESHOLD)
    results: list[dict[str, Any]] = []
    times: list[float] = []
    for image in images:
        data = (EVAL_DIR / "images" / image["file_name"]).read_bytes()
        start = time.perf_counter()
        detections = analyse(data, settings, model=model).detections
        times.append((time.perf_counter() - start) * 1000)
        results.extend(as_coco(image["id"], list(detections), 1.0, 1.0))
    return results, times


def photo_labels(model: str) -> dict[str, list[str]]:
    from PIL import Image
    from skimage import data

    settings = model_settings(model, DEFAULT_SCORE_THRESHOLD)
    found = {}
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="JPEG", quality=92)
        dets = analyse(buf.getvalue(), settings, model=model).detections
        found[name] = [f"{d.label} {d.score:.2f}" for d in dets]
    return found


def evaluate(
    model: str, resize: str | None, gt: Any, images: list[dict[str, Any]]
) -> dict[str, Any]:
    detector: Any = load_detector(model_settings(model, EVAL_THRESHOLD), model)
    default_resize = getattr(detector, "resize_mode", None)
    if resize is not None:
        detector.resize_mode = resize
    detector.warm_up()
    try:
        results, times = run_set(model, images)
    finally:
        if resize is not None:
            detector.resize_mode = default_resize
    spec = CATALOG.get(model)
    return {
        "model": model,
        "version": detector.version,
        "resize": resize or default_resize or "topleft letterbox, pad 114",
        **coco_ap(gt, results, [image["id"] for image in images]),
        "upstream_AP": spec.coco_ap if spec else None,
        "ms_per_image_median": round(statistics.median(times), 1),
        "images_per_s": round(len(times) / (sum(times) / 1000), 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | resize | AP | AP50 | AP S / M / L | AP upstream | ms/image | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['resize']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
            f"{r['AP_small']:.3f} / {r['AP_medium']:.3f} / {r['AP_large']:.3f} | "
            f"{r['upstream_AP']} | {r['ms_per_image_median']} | {r['images_per_s']} |"
        )
    return "\n".join(lines)


def main() -> int:
    from pycocotools.coco import COCO

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["yolox-nano", "nanodet-g-416"])
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(EVAL_DIR / "annotations.json"))
    images = sorted(gt.dataset["images"], key=lambda i: i["id"])[: args.limit]
    run = runinfo.start()
    rows = []
    for model in args.models:
        variants = (
            [None, "stretch"]
            if CATALOG.get(model, None) and model.startswith("nanodet")
            else [None]
        )
        for resize in variants:
            logger.info("%s (%s): %d images", model, resize or "as served", len(images))
            rows.append(evaluate(model, resize, gt, images))
    labels = {model: photo_labels(model) for model in args.models}
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(images),
        "score_threshold": EVAL_THRESHOLD,
        "rows": rows,
        "photo_labels_at_default_threshold": labels,
        "run": runinfo.finish(run),  # AP is exact at any load; images/s is not
    }
    out = ROOT / "bench" / "results" / f"eval-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(table(rows) + "\n\n" + json.dumps(labels, indent=2) + "\n")
    logger.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
