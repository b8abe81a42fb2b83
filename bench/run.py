"""Benchmarks: the model's raw ceiling in one process vs the whole stack end to end.

Prints one JSON document and keeps it under bench/results/. Figures from one run are
comparable with each other; absolute numbers depend on the machine, so read the ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from devstack import Stack  # noqa: E402

from ml_common.apikeys import ApiKeyStore  # noqa: E402
from ml_common.images import decode_rgb  # noqa: E402
from ml_common.settings import Settings  # noqa: E402

logger = logging.getLogger("bench")
PHOTOS = ("astronaut", "coffee", "chelsea")


def photos() -> list[bytes]:
    from skimage import data

    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(latencies_ms: list[float], wall_s: float) -> dict[str, float]:
    return {
        "images": len(latencies_ms),
        "images_per_s": round(len(latencies_ms) / wall_s, 3),
        "p50_ms": round(statistics.median(latencies_ms), 2),
        "p95_ms": round(percentile(latencies_ms, 95), 2),
    }


def bench_in_process(images: list[bytes], n: int) -> dict[str, Any]:
    """The baseline: decode + detect per image in this process, no queue, no HTTP."""
    from ml_celery.detectors.registry import load_detector

    settings = Settings()
    t0 = time.perf_counter()
    detector = load_detector(settings)
    detector.warm_up()
    load_s = time.perf_counter() - t0
    latencies, inference = [], []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        out = detector.detect(decode_rgb(images[i % len(images)], settings.max_image_pixels))
        latencies.append((time.perf_counter() - t) * 1000)
        inference.append(out.inference_ms)
    wall = time.perf_counter() - start
    return {
        **summarize(latencies, wall),
        "inference_p50_ms": round(statistics.median(inference), 2),
        "model_load_and_warmup_s": round(load_s, 2),
    }


def _one_request(client: httpx.Client, data: bytes) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = client.post("/api/v1/detections", files={"file": ("p.jpg", data, "image/jpeg")})
    r.raise_for_status()
    task_id = r.json()["task_id"]
    while True:
        s = client.get(f"/api/v1/detections/{task_id}", params={"wait": 30})
        s.raise_for_status()
        body: dict[str, Any] = s.json()
        if body["status"] in ("succeeded", "failed"):
            return (time.perf_counter() - t) * 1000, body


def bench_end_to_end(
    stack: Stack, key: str, images: list[bytes], n: int, clients: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    failed = 0
    stages: dict[str, list[float]] = {}
    lock = threading.Lock()
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as client:
        _one_request(client, images[0])  # the first request after start: reported separately
        start = time.perf_counter()

        def run(i: int) -> None:
            nonlocal failed
            ms, body = _one_request(client, images[i % len(images)])
            with lock:
                latencies.append(ms)
                if body["status"] != "succeeded":
                    failed += 1
                    return
                for stage, value in (body["result"].get("timings") or {}).items():
                    if value is not None:
                        stages.setdefault(stage, []).append(value)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, range(n)))
        wall = time.perf_counter() - start
    return {
        **summarize(latencies, wall),
        "clients": clients,
        "failed": failed,
        "stage_p50_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=60, help="images per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["valkey", "rabbitmq-redis"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    images = photos()

    logger.info("in-process baseline (%d images)", args.n)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "in_process": bench_in_process(images, args.n),
        "end_to_end": {},
    }
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"ML_STORAGE_DIR": f"{tmp}/storage", "ML_LOG_LEVEL": "WARNING"}
            if backend == "rabbitmq-redis":
                env |= {"ML_BROKER_URL": "amqp://guest:guest@localhost:5672//",
                        "ML_RESULT_BACKEND": "redis://localhost:6379/5",
                        "ML_QUEUE_NAME": "detections-bench"}  # fmt: skip
            stack = Stack(env, Path(tmp) / "logs", args.worker_concurrency)
            if backend == "valkey":
                stack.start_embedded_backend()
            settings = Settings(_env_file=None, storage_dir=Path(tmp) / "storage")  # type: ignore[call-arg]
            key, _ = ApiKeyStore(settings.api_keys_path).create("bench")
            try:
                t0 = time.perf_counter()
                stack.start_worker()
                stack.start_api()
                stack.wait_ready()
                ready_s = time.perf_counter() - t0
                runs = {}
                for clients in args.clients:
                    logger.info("%s: %d clients, %d images", backend, clients, args.n)
                    runs[str(clients)] = bench_end_to_end(stack, key, images, args.n, clients)
                report["end_to_end"][backend] = {
                    "start_to_ready_s": round(ready_s, 2),
                    "runs": runs,
                }
            finally:
                stack.stop()
    base = report["in_process"]["images_per_s"]
    report["ratios_to_in_process"] = {
        backend: {c: round(r["images_per_s"] / base, 3) for c, r in e2e["runs"].items()}
        for backend, e2e in report["end_to_end"].items()
    }
    out = ROOT / "bench" / "results" / f"bench-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    logger.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
