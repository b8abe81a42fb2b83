"""Benchmarks on the photo mix: the model's ceiling, the worker's stages and memory in one
process, and the whole stack end to end, per photo size (small, 2 MP, 12 MP, 4K PNG).

Prints one JSON document and keeps it under bench/results/ (`--plot` also draws the README's
figure). Figures from one run are comparable with each other; absolute numbers depend on the
machine, so read the ratios. `--soak N` instead pushes N tasks through one stack and reports
the processes' memory at the start, middle and end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import runinfo  # noqa: E402
from batch import bench_batches  # noqa: E402
from ceiling import ceiling  # noqa: E402
from e2e import bench_end_to_end, one_request, stack_pids  # noqa: E402
from photos import SETS, describe, photo_set  # noqa: E402
from plot import plot  # noqa: E402
from procstat import children, peak_rss_mb, rss_mb  # noqa: E402
from served import use_served_model  # noqa: E402
from stages import memory as stage_memory  # noqa: E402
from stages import stages  # noqa: E402
from stages import table as stage_table  # noqa: E402

from ml_common.apikeys import ApiKeyStore  # noqa: E402
from ml_common.settings import Settings  # noqa: E402
from ml_tools.devstack import Stack  # noqa: E402

logger = logging.getLogger("bench")


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
            "ML_QUEUE_NAME": "detections-bench-priority",
            "ML_QUEUE_MAX_PRIORITY": "10",  # single uploads before batch items
        }
    return env


def memory(stack: Stack) -> dict[str, Any]:
    worker = stack.procs["worker"].pid
    return {
        "api_mb": round(rss_mb(stack.procs["api"].pid), 1),
        "worker_parent_mb": round(rss_mb(worker), 1),
        "worker_children_mb": [round(rss_mb(p), 1) for p in children(worker)],
        "worker_children_peak_mb": [peak_rss_mb(p) for p in children(worker)],
    }


@contextmanager
def mlprod_stack(
    backend: str, tmp: str, concurrency: int, threads: int
) -> Iterator[tuple[Stack, str, float]]:
    """A started stack on `backend` (its API key, its start-to-ready seconds); stopped after."""
    stack = Stack(backend_env(backend, tmp, threads), Path(tmp) / "logs", concurrency)
    if backend == "valkey":
        stack.start_embedded_backend()
    settings = Settings(_env_file=None, storage_dir=Path(tmp) / "storage")  # type: ignore[call-arg]
    key, _ = ApiKeyStore(settings.api_keys_path).create("bench")
    try:
        t_worker = time.perf_counter()
        stack.start_worker()
        stack.start_api()
        stack.wait_ready()
        yield stack, key, time.perf_counter() - t_worker
    finally:
        stack.stop()


def run_backend(
    backend: str, sets: dict[str, list[bytes]], args: argparse.Namespace, tmp: str
) -> dict[str, Any]:
    t_start = time.perf_counter()
    images = sets[next(iter(sets))]
    with mlprod_stack(backend, tmp, args.worker_concurrency, args.intra_op_threads) as (
        stack,
        key,
        ready_s,
    ):
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
        out["runs"] = {
            name: runs(stack, key, backend, name, photos, args) for name, photos in sets.items()
        }
        if args.batch_n:  # small photos: the batch figures are about the queue, not the model
            small = sets.get("small") or images
            pids = stack_pids(stack, backend)
            clients = max(args.clients)
            out["batches"] = bench_batches(stack.api_url, key, small, args.batch_n, clients, pids)
        out["memory_at_end"] = memory(stack)
        return out


def runs(
    stack: Stack, key: str, backend: str, photo: str, images: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """One photo set through the stack at each concurrency."""
    out = {}
    for clients in args.clients:
        logger.info("%s photos: %d clients, %d images", photo, clients, args.n)
        pids = stack_pids(stack, backend)
        out[str(clients)] = bench_end_to_end(stack.api_url, key, images, args.n, clients, pids)
    return out


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
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="photo sizes")
    parser.add_argument("--stage-n", type=int, default=30, help="in-process tasks per photo set")
    parser.add_argument("--memory-n", type=int, default=30, help="12 MP tasks; 0 skips")
    parser.add_argument("--soak", type=int, default=0, help="tasks for the memory soak")
    parser.add_argument(
        "--batch-n", type=int, default=1000, help="images of the batch figures (0 skips)"
    )
    parser.add_argument("--plot", type=Path, help="draw perf-<size>.png into this folder")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model = use_served_model()
    sets = {name: photo_set(name) for name in args.sets}
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "run": runinfo.start(),
        "worker": {"concurrency": args.worker_concurrency, "threads": args.intra_op_threads},
        "photos": {name: describe(images) for name, images in sets.items()},
    }
    if not args.soak:
        measure_in_process(report, sets, args)
    report["end_to_end"] = {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            report["end_to_end"][backend] = run_backend(backend, sets, args, tmp)
    if not args.soak:
        add_ratios(report)
    runinfo.finish(report["run"])
    name = f"{'soak' if args.soak else 'bench'}-{report['date'].replace(':', '')}.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    if args.plot and not args.soak:
        plot(report, args.plot)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if not args.soak:
        sys.stdout.write("\n" + stage_table(report["in_process"]) + "\n")
    sys.stdout.write(runinfo.banner(report["run"]) + "\n")
    logger.info("saved %s", out)
    return 0


def measure_in_process(
    report: dict[str, Any], sets: dict[str, list[bytes]], args: argparse.Namespace
) -> None:
    """The ceiling, the worker's stages per photo size, and a worker's memory over 12 MP."""
    if args.ceiling_seconds:
        logger.info("ceiling: processes x threads, plain invoke loop")
        report["ceiling"] = ceiling(sets["small"][0], seconds=args.ceiling_seconds)
    logger.info("in process: the worker's stages, %d tasks per photo set", args.stage_n)
    report["in_process"] = stages(sets, args.stage_n, args.intra_op_threads)
    if args.memory_n:
        logger.info("memory: %d 12 MP photos back to back in a fresh process", args.memory_n)
        report["worker_memory_12mp"] = stage_memory(photo_set("12mp"), args.memory_n)


def add_ratios(report: dict[str, Any]) -> None:
    """Throughput over the in-process and the ceiling's, and the CPU a worker's pool processes
    spend per image beyond the task's own work in one process (Celery, Redis, logs, metrics)."""
    limit = report.get("ceiling", {}).get("L_images_per_s")
    for e2e in report["end_to_end"].values():
        for photo, by_clients in e2e["runs"].items():
            base = report["in_process"][photo]["images_per_s"]
            task_cpu = report["in_process"][photo].get("task_cpu_ms_mean")
            for run in by_clients.values():
                run["ratio_to_in_process"] = round(run["images_per_s"] / base, 3)
                pool = run["cpu_ms_per_image"].get("worker_children")
                if task_cpu is not None and pool is not None:
                    run["pool_cpu_ms_beyond_task"] = round(pool - task_cpu, 2)
                if limit:
                    run["ratio_to_L"] = round(run["images_per_s"] / limit, 3)


if __name__ == "__main__":
    raise SystemExit(main())
