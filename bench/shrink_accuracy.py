"""COCO AP of photos shrunk on the client (`max_side`) against the same photos sent whole.

Each photo of ../shared/eval/coco-val2017-158 is upscaled to 12 MP (as a phone's would be,
`accuracy.upscaled`), then sent through the worker's `analyse()` as it is and shrunk to each
`--sides` long side by the SDK's own `shrink` (upright, JPEG q90) with `original_size`, so the
boxes come back in the 12 MP photo's pixels; they are mapped to the published scale, where the
ground truth is. At score threshold 0.01 and at most 100 boxes, as `make eval`. This is what
chose the web page's default shrink size (docs/performance.md). JSON into bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import runinfo  # noqa: E402
from accuracy import EVAL_DIR, as_coco, coco_ap, upscaled  # noqa: E402
from eval import EVAL_THRESHOLD, model_settings  # noqa: E402

from ml_celery.pipeline import analyse  # noqa: E402
from mlprod_client.shrink import shrink  # noqa: E402

logger = logging.getLogger("bench.shrink_accuracy")
WHOLE = "12mp"


def variants(data: bytes, sides: list[int]) -> dict[str, tuple[bytes, list[int] | None, int]]:
    """Name → (bytes sent, original_size or None, bytes sent) for the photo and each shrink."""
    out: dict[str, tuple[bytes, list[int] | None, int]] = {WHOLE: (data, None, len(data))}
    for side in sides:
        shrunk = shrink(data, side)
        if shrunk is not None:
            out[str(side)] = (shrunk.data, list(shrunk.original_size), len(shrunk.data))
    return out


def evaluate(models: list[str], sides: list[int], limit: int | None) -> dict[str, Any]:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(EVAL_DIR / "annotations.json"))
    images = sorted(gt.dataset["images"], key=lambda i: i["id"])[:limit]
    settings = {m: model_settings(m, EVAL_THRESHOLD) for m in models}
    names = [WHOLE, *map(str, sides)]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sent: dict[str, int] = dict.fromkeys(names, 0)
    for i, image in enumerate(images):
        data, sx, sy = upscaled(EVAL_DIR / "images" / image["file_name"])
        for name, (body, size, nbytes) in variants(data, sides).items():
            sent[name] += nbytes
            for model in models:
                result = analyse(body, settings[model], model=model, original_size=size)
                dets = list(as_coco(image["id"], result.detections, sx, sy))
                results.setdefault((model, name), []).extend(dets)
        if i % 20 == 0:
            logger.info("%d/%d images", i + 1, len(images))
    ids = [image["id"] for image in images]
    ap = {f"{m} {n}": coco_ap(gt, results.get((m, n), []), ids) for m in models for n in names}
    mean_kb = {n: round(sent[n] / len(images) / 1024, 1) for n in names}
    return {"images": len(images), "mean_kb_sent": mean_kb, "ap": ap}


def table(report: dict[str, Any], models: list[str]) -> str:
    names = list(report["mean_kb_sent"])
    lines = ["| model | " + " | ".join(f"{n} AP" for n in names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for model in models:
        cells = [f"{report['ap'][f'{model} {n}']['AP']:.4f}" for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    kb = [f"{report['mean_kb_sent'][n]:.0f} kB" for n in names]
    lines.append("| mean bytes sent | " + " | ".join(kb) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["yolox-nano", "nanodet-g-416"])
    parser.add_argument("--sides", nargs="+", type=int, default=[800, 1024, 1280, 1600])
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run = runinfo.start()
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    report |= evaluate(args.models, args.sides, args.limit)
    report["run"] = runinfo.finish(run)  # AP is exact at any load
    out = ROOT / "bench" / "results" / f"shrink-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n\n" + table(report, args.models) + "\n")
    logger.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
