"""mlprod beside BentoML, in one run: the same model, the same `analyse()` code, one load generator.

Systems, each with 2 worker processes x 1 inference thread, started one after the other so
that they never share the CPU: mlprod (API + Celery worker, embedded Valkey or RabbitMQ + Redis),
BentoML's sync endpoint (`@bentoml.api`, the response carries the result) and BentoML's task
queue (`@bentoml.task`: submit, poll the status every --poll-ms, get). The same load generator
(e2e.drive: N clients each posting one photo and waiting for its result) drives them at each
concurrency on each photo set. BentoML runs from bench/.venv-bentoml (`make bench-peers`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import e2e  # noqa: E402
import runinfo  # noqa: E402
from ceiling import ONNX, Config, ceiling  # noqa: E402
from e2e import Sample, Send, check_deadline, drive, request, stack_pids  # noqa: E402
from photos import describe, photo_set  # noqa: E402
from procstat import descendants, peak_rss_mb  # noqa: E402
from run import mlprod_stack  # noqa: E402
from served import use_served_model  # noqa: E402

from ml_tools.devstack import die_with_parent, free_port, wait_http  # noqa: E402

logger = logging.getLogger("bench.peers")
BENTO_VENV = ROOT / "bench" / ".venv-bentoml"
poll_s = 0.1  # --poll-ms
SYSTEMS = ("mlprod", "bentoml-sync", "bentoml-task")
RUNTIME_OF = {"yolox-nano": ONNX}


def _timings(body: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in (body.get("timings") or {}).items() if v is not None}


def bento_sync(client: httpx.Client, data: bytes) -> Sample:
    t = time.perf_counter()
    r = client.post("/analyse", files={"image": ("p.jpg", data, "image/jpeg")})
    r.raise_for_status()
    return Sample((time.perf_counter() - t) * 1000, True, _timings(r.json()))


def bento_task(client: httpx.Client, data: bytes) -> Sample:
    t = time.perf_counter()
    r = client.post("/analyse_task/submit", files={"image": ("p.jpg", data, "image/jpeg")})
    r.raise_for_status()
    task_id = r.json()["task_id"]
    while True:
        check_deadline(t)
        s = client.get("/analyse_task/status", params={"task_id": task_id})
        s.raise_for_status()
        status = s.json()["status"]
        if status not in ("pending", "in_progress"):
            break
        time.sleep(poll_s)
    if status != "completed":
        return Sample((time.perf_counter() - t) * 1000, False)
    g = client.get("/analyse_task/get", params={"task_id": task_id})
    g.raise_for_status()
    return Sample((time.perf_counter() - t) * 1000, True, _timings(g.json()))


@contextmanager
def bentoml_server(workers: int, threads: int, tmp: Path, log: Path) -> Iterator[tuple[str, int]]:
    """`bentoml serve` of bento_service.Detect (its home in `tmp`, its output in `log`); its URL
    and process id, stopped after."""
    if not (BENTO_VENV / "bin" / "bentoml").exists():
        raise SystemExit("no BentoML environment: run `make bench-peers` (it builds it)")
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("ml-common", "ml-celery", "bench")),
        "ML_MODEL_DIR": str(ROOT / "ml-storages" / "models" / "nanodet-g-416"),
        "ML_INTRA_OP_THREADS": str(threads),
        "ML_LOG_LEVEL": "WARNING",
        "BENCH_BENTO_WORKERS": str(workers),
        "BENTOML_HOME": str(tmp / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    args = [str(BENTO_VENV / "bin" / "bentoml"), "serve", "bento_service:Detect"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "--port", str(port), "--host", "127.0.0.1"],
            cwd=ROOT / "bench",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 180, proc)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def system(name: str, args: argparse.Namespace, tmp: str, photo: str) -> Iterator[dict[str, Any]]:
    """The system `name` started: base URL, headers, send function and its processes."""
    if name == "mlprod":
        with mlprod_stack(args.backend, tmp, args.workers, args.threads) as (stack, key, _):
            yield {
                "url": stack.api_url,
                "headers": {"Authorization": f"Bearer {key}"},
                "send": request,
                "pids": lambda: stack_pids(stack, args.backend),
            }
        return
    log = ROOT / "bench" / "results" / f"{name}-{photo}.log"  # BentoML logs its failures
    with bentoml_server(args.workers, args.threads, Path(tmp), log) as (url, pid):
        yield {
            "url": url,
            "headers": {},
            "send": bento_sync if name == "bentoml-sync" else bento_task,
            "pids": lambda: {"server": [pid, *descendants(pid)]},
        }


def run_system(name: str, sets: dict[str, list[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    """Each photo set on a freshly started system, so one set's failures cannot carry over."""
    out: dict[str, Any] = {}
    for photo, images in sets.items():
        with tempfile.TemporaryDirectory() as tmp, system(name, args, tmp, photo) as sut:
            send: Send = sut["send"]
            drive(sut["url"], sut["headers"], send, images[:1], 2, 1, {})  # warm connections
            out[photo] = {}
            for clients in args.clients:
                n = max(args.n, 3 * clients)
                logger.info("%s, %s photos: %d clients, %d images", name, photo, clients, n)
                pids = sut["pids"]()
                run = drive(sut["url"], sut["headers"], send, images, n, clients, pids)
                run["peak_rss_mb"] = {k: [peak_rss_mb(p) for p in v] for k, v in pids.items()}
                out[photo][str(clients)] = run
    return out


def median_runs(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system, photo set and concurrency: the round with the median images/s, and every
    round's images/s beside it (the spread a reader needs to trust a ratio)."""
    out: dict[str, Any] = {}
    for name, by_photo in rounds[0].items():
        for photo, runs in by_photo.items():
            for clients in runs:
                tries = sorted(
                    (r[name][photo][clients] for r in rounds), key=lambda t: t["images_per_s"]
                )
                median = dict(tries[(len(tries) - 1) // 2])
                median["images_per_s_rounds"] = [t["images_per_s"] for t in tries]
                out.setdefault(name, {}).setdefault(photo, {})[clients] = median
    return out


def _rate(run: dict[str, Any]) -> str:
    """Images/s, with the rounds' range when there were several."""
    tries = run.get("images_per_s_rounds", [])
    spread = f" ({min(tries):.1f}-{max(tries):.1f})" if len(tries) > 1 else ""
    return f"{run['images_per_s']:.1f}{spread}"


def table(report: dict[str, Any]) -> str:
    """Per system and photo set: images/s, p95 ms and failed requests at each concurrency."""
    clients = report["clients"]
    rounds = report.get("rounds", 1)
    what = f"img/s (median of {rounds} rounds, range)" if rounds > 1 else "img/s"
    head = " | ".join(f"{c} clients: {what}, p95 ms, errors" for c in clients)
    lines = [f"| system | photos | {head} |", "|---|---|" + "---|" * len(clients)]
    if "ceiling" in report:
        top = report["ceiling"]["best"]
        config = report["ceiling"]["configs"][top]
        cell = f"{config['images_per_s']} (a core each: {config['cpu_bound_images_per_s']})"
        lines.append(f"| ceiling L, {top} | any | {cell} |" + " |" * (len(clients) - 1))
    for name, by_photo in report["systems"].items():
        for photo, runs in by_photo.items():
            cells = [runs[str(c)] for c in clients]
            row = " | ".join(f"{_rate(r)}, {r['p95_ms']:.0f}, {r['failed']}" for r in cells)
            lines.append(f"| {name} | {photo} | {row} |")
    return "\n".join(lines + ratios(report))


def ratios(report: dict[str, Any]) -> list[str]:
    """mlprod's best images/s over each peer's best, per photo set."""
    best = {
        (name, photo): max(r["images_per_s"] for r in runs.values())
        for name, by_photo in report["systems"].items()
        for photo, runs in by_photo.items()
    }
    lines = [""]
    for (name, photo), value in best.items():
        if name != "mlprod" and ("mlprod", photo) in best and value:
            ratio = best[("mlprod", photo)] / value
            lines.append(f"- {photo}: mlprod / {name} at the best concurrency = {ratio:.2f}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=60, help="images per measurement (at least 3N)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--sets", nargs="+", default=["small", "12mp"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--backend", default="valkey", choices=["valkey", "rabbitmq-redis"])
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--threads", type=int, default=1, help="inference threads per process")
    parser.add_argument("--ceiling-seconds", type=float, default=6, help="0 skips the ceiling")
    parser.add_argument("--deadline", type=float, default=60, help="s before a request fails")
    parser.add_argument(
        "--rounds", type=int, default=1, help="systems run in turn this many times; the median"
    )
    parser.add_argument("--poll-ms", type=float, default=100, help="task queue status polls")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    global poll_s
    e2e.DEADLINE_S, poll_s = args.deadline, args.poll_ms / 1000
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model = use_served_model()
    sets = {name: photo_set(name) for name in args.sets}
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "cpus": os.cpu_count(),
        "run": runinfo.start(),
        "workers": args.workers,
        "threads": args.threads,
        "mlprod_backend": args.backend,
        "clients": args.clients,
        "rounds": args.rounds,
        "photos": {name: describe(images) for name, images in sets.items()},
    }
    if args.ceiling_seconds:
        config = Config(args.workers, args.threads, runtime=RUNTIME_OF.get(model, "tflite"))
        report["ceiling"] = ceiling(sets["small"][0], args.ceiling_seconds, 1, (config,))
    rounds = []
    for number in range(args.rounds):  # ABAB: drift of the machine reaches every system alike
        logger.info("round %d of %d", number + 1, args.rounds)
        rounds.append({name: run_system(name, sets, args) for name in args.systems})
    report["systems"] = median_runs(rounds)
    runinfo.finish(report["run"])
    out = ROOT / "bench" / "results" / f"peers-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(table(report) + "\n" + runinfo.banner(report["run"]) + "\n")
    logger.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
