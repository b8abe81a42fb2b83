"""The API's CPU time per upload, by photo size, and so how many uploads one API core takes.

Starts the API alone (no worker) on the local RabbitMQ and Redis, posts the same photo many
times from one keep-alive client, and reads the API process's CPU time from /proc before and
after. Also times the upload check by itself in this process. With `--baseline REF` the API
of that commit runs beside this tree's, on the same services, and the two take turns in
rounds, so that both see the same machine (before/after figures from one run). With
`--with-result` a worker runs too, and each small photo is uploaded and its result read: in one
request (a raw body with `Prefer: wait`) where the API takes it, else a form upload and a
`?wait=` GET; the figure is the API's CPU per image, both requests together. Usage:

    .venv/bin/python bench/api_cost.py [--uploads 300] [--baseline REF] [--with-result]
        [--broker URL] [--results URL] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from kombu import Connection
from PIL import Image
from redis import asyncio as aioredis
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from procstat import cpu_s  # noqa: E402

from ml_api.app import create_app  # noqa: E402
from ml_api.queue import TaskQueue  # noqa: E402
from ml_common import records  # noqa: E402
from ml_common.apikeys import ApiKeyStore  # noqa: E402
from ml_common.contract import DetectPayload  # noqa: E402
from ml_common.images import ImageLimits, inspect_image  # noqa: E402
from ml_common.records import TaskRecord  # noqa: E402
from ml_common.settings import Settings  # noqa: E402
from ml_common.storage import LocalStorage  # noqa: E402
from ml_common.taskstore import TaskStore  # noqa: E402
from ml_tools.devstack import Stack, wait_http  # noqa: E402

logger = logging.getLogger("api_cost")
BROKER = "amqp://guest:guest@localhost:5672//"
RESULTS = "redis://localhost:6379/6"
LIMITS = ImageLimits(40_000_000, 30_000, 20.0)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photos() -> dict[str, bytes]:
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    large = astronaut.resize((4000, 3000), Image.Resampling.BICUBIC)
    # an upscaled photo is smoother than a camera's: grain brings it to a phone photo's size
    grain = np.random.default_rng(0).normal(0, 8, (3000, 4000, 3))
    grainy = Image.fromarray(np.clip(np.asarray(large) + grain, 0, 255).astype(np.uint8))
    return {
        "small 512x512": jpeg(astronaut),
        "12 MP 4000x3000": jpeg(large),
        "12 MP 4000x3000 with grain": jpeg(grainy),
    }


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    """CPU milliseconds of one call of `work`, in this process."""
    work()
    t0 = time.process_time()
    for _ in range(repeat):
        work()
    return (time.process_time() - t0) / repeat * 1000


def full_decode_at_one_eighth(data: bytes) -> None:
    """What the upload check used to cost: every scan decoded, at 1/8 scale."""
    img = Image.open(io.BytesIO(data))
    img.draft(img.mode, (img.width // 8, img.height // 8))
    img.load()


def old_check_cpu_ms(data: bytes) -> float:
    return round(cpu_ms(lambda: full_decode_at_one_eighth(data), 10), 3)


def multipart_cpu_ms(data: bytes, repeat: int) -> float:
    """Starlette's multipart parsing of an upload arriving in 64 kB pieces, and its read."""
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--b0undary--\r\n"
    )
    headers = Headers({"content-type": "multipart/form-data; boundary=b0undary"})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async def parse() -> None:
        form = await MultiPartParser(headers, chunks()).parse()
        upload = form["file"]
        assert isinstance(upload, UploadFile)
        await upload.read()
        await form.close()

    loop = asyncio.new_event_loop()
    try:
        return cpu_ms(lambda: loop.run_until_complete(parse()), repeat)
    finally:
        loop.close()


def pieces_cpu_ms(data: bytes, settings: Settings) -> dict[str, float]:
    """Each step of an upload on its own, in this process: CPU ms per call."""
    create_app(settings)  # what the app sets for its parser (an in-memory spool) holds here too
    storage, queue = LocalStorage(settings.storage_dir), TaskQueue(settings)
    client = aioredis.Redis.from_url(str(settings.result_backend))
    tasks, loop = TaskStore(client, 600), asyncio.new_event_loop()
    created: list[str] = []

    def record() -> None:
        created.append(str(uuid.uuid4()))
        new = TaskRecord.new(created[-1], "bench", storage.upload_key(created[-1], "jpg"))
        loop.run_until_complete(tasks.create(new))
        loop.run_until_complete(tasks.mark_queued(new.task_id))

    def submit() -> None:
        created.append(str(uuid.uuid4()))
        payload = DetectPayload(upload_key=storage.upload_key(created[-1], "jpg"), created_at="")
        queue.submit(created[-1], payload)

    try:
        queue.warm()
        return {
            "multipart": round(multipart_cpu_ms(data, 20), 3),
            "check": round(cpu_ms(lambda: inspect_image(data, LIMITS), 50), 3),
            "store_fsync": round(
                cpu_ms(
                    lambda: storage.write(storage.upload_key(str(uuid.uuid4()), "jpg"), data), 30
                ),
                3,
            ),
            "record_2_redis_calls": round(cpu_ms(record, 50), 3),
            "enqueue": round(cpu_ms(submit, 50), 3),
        }
    finally:
        loop.run_until_complete(client.delete(*(records.record_key(t) for t in created)))
        loop.run_until_complete(client.aclose())
        loop.close()
        queue.close()


def server_timing(header: str) -> dict[str, float]:
    stages = (part.strip().partition(";dur=") for part in header.split(","))
    return {name: float(dur) for name, _, dur in stages if dur}


def get_many(url: str, path: str, n: int) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            client.get(f"{url}{path}").raise_for_status()


def post_many(url: str, key: str, data: bytes, n: int) -> tuple[list[str], dict[str, float]]:
    """Post `data` n times; the task ids and the mean wall ms of each Server-Timing stage."""
    task_ids, timings = [], []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(n):
            r = client.post(f"{url}/api/v1/detections", files={"file": ("p.jpg", data)})
            r.raise_for_status()
            task_ids.append(r.json()["task_id"])
            timings.append(server_timing(r.headers.get("server-timing", "")))
    stages = {s: round(statistics.fmean(t[s] for t in timings), 3) for s in timings[0]}
    return task_ids, stages


def detect_many(url: str, key: str, data: bytes, n: int, one_request: bool) -> list[str]:
    """Upload `data` n times and read each result: one request, or a POST and a GET."""
    task_ids = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for _ in range(n):
            if one_request:
                r = c.post("/api/v1/detections", content=data, params={"filename": "p.jpg"},
                           headers={"Content-Type": "image/jpeg", "Prefer": "wait=30"})  # fmt: skip
            else:
                task_id = c.post("/api/v1/detections", files={"file": ("p.jpg", data)}).json()[
                    "task_id"
                ]
                r = c.get(f"/api/v1/detections/{task_id}", params={"wait": 30})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            task_ids.append(r.json()["task_id"])
    return task_ids


def takes_one_request(url: str, key: str, data: bytes) -> bool:
    """Whether the API answers a raw upload with `Prefer: wait` (older ones refuse it)."""
    r = httpx.post(f"{url}/api/v1/detections", content=data, timeout=60,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg",
                            "Prefer": "wait=30"})  # fmt: skip
    return r.status_code == 200


def measure_with_result(
    stacks: dict[str, Stack], key: str, data: bytes, images: int, rounds: int = 4
) -> dict[str, dict[str, Any]]:
    """CPU ms of each API process per image, upload and result together; in turns."""
    found: dict[str, dict[str, Any]] = {}
    for name, stack in stacks.items():
        one = takes_one_request(stack.api_url, key, data)
        warm = detect_many(stack.api_url, key, data, 20, one)
        found[name] = {"one": one, "cpu_s": 0.0, "n": 0, "task_ids": warm}
    for _ in range(rounds):
        for name, stack in stacks.items():
            pid, tally = stack.procs["api"].pid, found[name]
            before = cpu_s(pid)
            tally["task_ids"] += detect_many(
                stack.api_url, key, data, images // rounds, tally["one"]
            )
            tally["cpu_s"] += cpu_s(pid) - before
            tally["n"] += images // rounds
    return {
        name: {
            "requests_per_image": 1 if t["one"] else 2,
            "api_cpu_ms_per_image": round(t["cpu_s"] / t["n"] * 1000, 2),
            "task_ids": t["task_ids"],
        }
        for name, t in found.items()
    }


def healthz_cpu_ms(stack: Stack, n: int) -> float:
    """The floor: CPU ms of the API process per GET /healthz (HTTP, ASGI, middleware)."""
    pid = stack.procs["api"].pid
    get_many(stack.api_url, "/healthz", 20)
    before = cpu_s(pid)
    get_many(stack.api_url, "/healthz", n)
    return round((cpu_s(pid) - before) / n * 1000, 3)


def measure(
    stacks: dict[str, Stack], key: str, data: bytes, uploads: int, rounds: int = 4
) -> dict[str, dict[str, Any]]:
    """CPU ms of each API process per upload of `data`, and Server-Timing's wall ms; the
    APIs take turns, `uploads / rounds` uploads each."""
    found: dict[str, dict[str, Any]] = {}
    for name, stack in stacks.items():
        warm, _ = post_many(stack.api_url, key, data, 20)
        found[name] = {"cpu_s": 0.0, "n": 0, "stages": [], "task_ids": warm}
    for _ in range(rounds):
        for name, stack in stacks.items():
            pid, tally = stack.procs["api"].pid, found[name]
            before = cpu_s(pid)
            task_ids, stages = post_many(stack.api_url, key, data, uploads // rounds)
            tally["cpu_s"] += cpu_s(pid) - before
            tally["n"] += len(task_ids)
            tally["stages"].append(stages)
            tally["task_ids"] += task_ids
    return {name: _figures(tally, len(data)) for name, tally in found.items()}


def _figures(tally: dict[str, Any], size: int) -> dict[str, Any]:
    per_upload = tally["cpu_s"] / tally["n"] * 1000
    stages = {
        s: round(statistics.fmean(t[s] for t in tally["stages"]), 3) for s in tally["stages"][0]
    }
    return {
        "bytes": size,
        "api_cpu_ms_per_upload": round(per_upload, 2),
        "uploads_per_s_per_api_core": round(1000 / per_upload),
        "server_timing_wall_ms": stages,
        "task_ids": tally["task_ids"],
    }


def baseline_tree(ref: str, into: Path) -> dict[str, str]:
    """The service packages as of commit `ref`, and the environment that imports them."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "ml-common", "ml-api"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return {"PYTHONPATH": f"{into / 'ml-common'}:{into / 'ml-api'}"}


def clean_up(queue: str, task_ids: list[str], broker: str, results: str) -> None:
    with Connection(broker) as conn:
        conn.default_channel.queue_delete(queue)
    client = redis.Redis.from_url(results)
    for start in range(0, len(task_ids), 500):
        client.delete(*(records.record_key(t) for t in task_ids[start : start + 500]))


def run(
    uploads: int, baseline: str | None = None, with_result: bool = False,
    broker: str = BROKER, results_url: str = RESULTS,
) -> dict[str, Any]:  # fmt: skip
    queue = f"api-cost-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "ML_BROKER_URL": broker, "ML_RESULT_BACKEND": results_url, "ML_STORAGE_DIR": tmp,
            "ML_QUEUE_NAME": queue, "ML_RATE_LIMIT_PER_MINUTE": "1000000",
            "ML_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        settings = Settings(_env_file=None, **{k[3:].lower(): v for k, v in env.items()})
        key, _ = ApiKeyStore(settings.api_keys_path).create("api-cost")
        stacks = {"this tree": Stack(env=dict(env), log_dir=Path(tmp) / "logs")}
        if baseline:
            old = {**env, **baseline_tree(baseline, Path(tmp) / "baseline")}
            stacks[f"baseline {baseline}"] = Stack(env=old, log_dir=Path(tmp) / "logs-baseline")
        results: dict[str, Any] = {}
        task_ids: list[str] = []
        try:
            for stack in stacks.values():
                stack.start_api()
                wait_http(f"{stack.api_url}/healthz", 60, stack.procs["api"])
            if with_result:
                first = next(iter(stacks.values()))
                first.start_worker()  # one worker on the queue both APIs send to
                first.wait_ready()
                small = photos()["small 512x512"]
                figures = measure_with_result(stacks, key, small, uploads)
                for each in figures.values():
                    task_ids += each.pop("task_ids")
                return {"small 512x512, upload and result": figures}
            results["GET /healthz"] = {
                name: {"api_cpu_ms_per_request": healthz_cpu_ms(stack, uploads)}
                for name, stack in stacks.items()
            }
            for name, data in photos().items():
                figures = measure(stacks, key, data, uploads)
                for each in figures.values():
                    task_ids += each.pop("task_ids")
                results[name] = {
                    **figures,
                    "old_check_cpu_ms": old_check_cpu_ms(data),
                    "pieces_cpu_ms_in_process": pieces_cpu_ms(data, settings),
                }
        finally:
            for stack in stacks.values():
                stack.stop()
            clean_up(queue, task_ids, broker, results_url)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline", help="a commit whose API runs beside this tree's")
    parser.add_argument("--with-result", action="store_true", help="a worker too: per image")
    parser.add_argument("--broker", default=BROKER, help="the RabbitMQ to use")
    parser.add_argument("--results", default=RESULTS, help="the Redis database to use")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = os.getloadavg()
    results = run(args.uploads, args.baseline, args.with_result, args.broker, args.results)
    results["load_average"] = {"start": started, "end": os.getloadavg()}
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
