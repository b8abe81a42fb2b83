"""Benchmarks: the model's ceiling, the in-process baseline and the whole stack end to end.

Prints one JSON document and keeps it under bench/results/ (`--plot` also draws the README's
figure). Figures from one run are comparable with each other; absolute numbers depend on the
machine, so read the ratios. `--soak N` instead pushes N tasks through one stack and reports
the processes' memory at the start, middle and end.
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
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ceiling import ceiling  # noqa: E402
from e2e import bench_end_to_end, one_request, stack_pids  # noqa: E402
from plot import plot  # noqa: E402
from procstat import children, rss_mb  # noqa: E402

from ml_common.apikeys import ApiKeyStore  # noqa: E402
from ml_common.devstack import Stack  # noqa: E402
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


def bench_in_process(images: list[bytes], n: int, threads: int) -> dict[str, Any]:
    """The baseline: decode + detect per image in this process, no queue, no HTTP."""
    from ml_celery.detectors.registry import build_detector

    settings = Settings(_env_file=None, intra_op_threads=threads)  # type: ignore[call-arg]
    t0 = time.perf_counter()
    detector = build_detector(settings)
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
        "runtime": settings.runtime,
        "threads": threads,
        "images": n,
        "images_per_s": round(n / wall, 3),
        "p50_ms": round(statistics.median(latencies), 2),
        "inference_p50_ms": round(statistics.median(inference), 2),
        "model_load_and_warmup_s": round(load_s, 2),
    }


def backend_env(backend: str, tmp: str, threads: int) -> dict[str, str]:
    env = {
        "ML_STORAGE_DIR": f"{tmp}/storage",
        "ML_LOG_LEVEL": "WARNING",
        "ML_INTRA_OP_THREADS": str(threads),
        # one key sends every request; the rate limit is not what the bench measures
        "ML_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    if backend == "rabbitmq-redis":
        env |= {
            "ML_BROKER_URL": "amqp://guest:guest@localhost:5672//",
            "ML_RESULT_BACKEND": "redis://localhost:6379/5",
            "ML_QUEUE_NAME": "detections-bench",
        }
    return env


def memory(stack: Stack) -> dict[str, Any]:
    worker = stack.procs["worker"].pid
    return {
        "api_mb": round(rss_mb(stack.procs["api"].pid), 1),
        "worker_parent_mb": round(rss_mb(worker), 1),
        "worker_children_mb": [round(rss_mb(p), 1) for p in children(worker)],
    }


def run_backend(
    backend: str, images: list[bytes], args: argparse.Namespace, tmp: str
) -> dict[str, Any]:
    t_start = time.perf_counter()
    stack = Stack(
        backend_env(backend, tmp, args.intra_op_threads),
        Path(tmp) / "logs",
        args.worker_concurrency,
    )
    if backend == "valkey":
        stack.start_embedded_backend()
    settings = Settings(_env_file=None, storage_dir=Path(tmp) / "storage")  # type: ignore[call-arg]
    key, _ = ApiKeyStore(settings.api_keys_path).create("bench")
    try:
        t_worker = time.perf_counter()
        stack.start_worker()
        stack.start_api()
        stack.wait_ready()
        ready_s = time.perf_counter() - t_worker
        first = one_request(stack.api_url, key, images[0])
        out: dict[str, Any] = {
            "cold_start": {
                "start_to_ready_s": round(ready_s, 2),
                "start_to_first_result_s": round(time.perf_counter() - t_start, 2),
                "first_request_ms": round(first.latency_ms, 1),
                "first_inference_ms": first.stages.get("inference_ms"),
            },
            "memory_at_start": memory(stack),
        }
        if args.soak:
            out["soak"] = soak(stack, key, images, args.soak, max(args.clients))
            return out
        runs = {}
        for clients in args.clients:
            logger.info("%s: %d clients, %d images", backend, clients, args.n)
            pids = stack_pids(stack, backend)
            runs[str(clients)] = bench_end_to_end(stack.api_url, key, images, args.n, clients, pids)
        out["runs"] = runs
        out["memory_at_end"] = memory(stack)
        return out
    finally:
        stack.stop()


def soak(stack: Stack, key: str, images: list[bytes], n: int, clients: int) -> dict[str, Any]:
    """`n` tasks in two halves; memory before, between and after."""
    samples = {"start": memory(stack)}
    halves = []
    for label in ("middle", "end"):
        logger.info("soak: %d tasks, %d clients", n // 2, clients)
        pids = stack_pids(stack, "soak")
        halves.append(bench_end_to_end(stack.api_url, key, images, n // 2, clients, pids))
        samples[label] = memory(stack)
    return {"tasks": n, "clients": clients, "memory_mb": samples, "halves": halves}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=90, help="images per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["valkey", "rabbitmq-redis"])
    parser.add_argument("--ceiling-seconds", type=float, default=8, help="0 skips the ceiling")
    parser.add_argument("--soak", type=int, default=0, help="tasks for the memory soak")
    parser.add_argument("--plot", type=Path, help="draw the throughput/latency figure here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    images = photos()
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "worker": {"concurrency": args.worker_concurrency, "threads": args.intra_op_threads},
    }
    if args.ceiling_seconds and not args.soak:
        logger.info("ceiling: runtimes x processes x threads")
        report["ceiling"] = ceiling(images[0], seconds=args.ceiling_seconds)
    logger.info("in-process baseline (%d images)", args.n)
    report["in_process"] = bench_in_process(images, args.n, threads=0)
    report["end_to_end"] = {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            report["end_to_end"][backend] = run_backend(backend, images, args, tmp)
    if not args.soak:
        add_ratios(report)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    name = f"{'soak' if args.soak else 'bench'}-{report['date'].replace(':', '')}.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if args.plot and not args.soak:
        plot(report, args.plot)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    logger.info("saved %s", out)
    return 0


def add_ratios(report: dict[str, Any]) -> None:
    base = report["in_process"]["images_per_s"]
    limit = report.get("ceiling", {}).get("L_images_per_s")
    for e2e in report["end_to_end"].values():
        for run in e2e["runs"].values():
            run["ratio_to_in_process"] = round(run["images_per_s"] / base, 3)
            if limit:
                run["ratio_to_L"] = round(run["images_per_s"] / limit, 3)


if __name__ == "__main__":
    raise SystemExit(main())
