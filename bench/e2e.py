"""End to end: concurrent HTTP clients post photos and wait for their results."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from procstat import children, cpu_of, pids_named

API_STAGES = ("receive", "validate", "store", "enqueue")


@dataclass
class Sample:
    latency_ms: float
    ok: bool
    # worker stages from the result's timings, API stages from Server-Timing, and notify_ms:
    # from the worker storing the result (date_done) to this client having it
    stages: dict[str, float] = field(default_factory=dict)


Send = Callable[[httpx.Client, bytes], Sample]


# a result not there this long after the upload counts as an error (a task a system lost)
DEADLINE_S = 120.0


def check_deadline(start: float) -> None:
    if time.perf_counter() - start > DEADLINE_S:
        raise TimeoutError(f"no result {DEADLINE_S:.0f} s after the upload")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[f"api_{name}_ms"] = float(dur)
    return out


def request(client: httpx.Client, data: bytes) -> Sample:
    """One photo the way the SDK's `detect_wait` sends it: the raw body with `Prefer: wait`, one
    request that answers 200 with the result; a 202 (the wait ran out) falls back to `?wait=`."""
    t = time.perf_counter()
    r = client.post(
        "/api/v1/detections",
        content=data,
        params={"filename": "p.jpg"},
        headers={"Content-Type": "image/jpeg", "Prefer": "wait=30"},
    )
    received = time.time()
    r.raise_for_status()
    stages = server_timing(r.headers.get("server-timing", ""))
    body: dict[str, Any] = r.json()
    if r.status_code == 202:
        body, received = _wait_for(client, body["task_id"], t)
    return _sample(t, received, body, stages)


def request_async(client: httpx.Client, data: bytes) -> Sample:
    """One photo by the asynchronous contract: a multipart POST, then `GET ?wait=` until done."""
    t = time.perf_counter()
    r = client.post("/api/v1/detections", files={"file": ("p.jpg", data, "image/jpeg")})
    r.raise_for_status()
    stages = server_timing(r.headers.get("server-timing", ""))
    body, received = _wait_for(client, r.json()["task_id"], t)
    return _sample(t, received, body, stages)


def _wait_for(client: httpx.Client, task_id: str, started: float) -> tuple[dict[str, Any], float]:
    while True:
        check_deadline(started)
        s = client.get(f"/api/v1/detections/{task_id}", params={"wait": 30})
        received = time.time()
        s.raise_for_status()
        body: dict[str, Any] = s.json()
        if body["status"] in ("succeeded", "failed"):
            return body, received


def _sample(
    started: float, received: float, body: dict[str, Any], stages: dict[str, float]
) -> Sample:
    latency = (time.perf_counter() - started) * 1000
    if body["status"] != "succeeded":
        return Sample(latency, False, stages)
    done = datetime.fromisoformat(body["finished_at"]).timestamp()
    stages["notify_ms"] = (received - done) * 1000
    for stage, value in (body["result"].get("timings") or {}).items():
        if value is not None:
            stages[stage] = value
    return Sample(latency, True, stages)


def one_request(api_url: str, key: str, data: bytes) -> Sample:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as client:
        return request(client, data)


def stack_pids(stack: Any, backend: str) -> dict[str, list[int]]:
    worker = stack.procs["worker"].pid
    pids = {
        "api": [stack.procs["api"].pid],
        "worker_parent": [worker],
        "worker_children": children(worker),
    }
    if "valkey" in stack.procs:
        pids["broker_and_backend"] = [stack.procs["valkey"].pid]
    elif backend == "rabbitmq-redis":
        pids["broker_and_backend"] = pids_named("beam.smp") + pids_named("redis-server")
    return pids


def bench_end_to_end(
    api_url: str, key: str, images: list[bytes], n: int, clients: int, pids: dict[str, list[int]]
) -> dict[str, Any]:
    """mlprod through its API: `clients` threads each post a photo and wait for its result."""
    return drive(api_url, {"Authorization": f"Bearer {key}"}, request, images, n, clients, pids)


def drive(
    base_url: str,
    headers: dict[str, str],
    send: Send,
    images: list[bytes],
    n: int,
    clients: int,
    pids: dict[str, list[int]],
) -> dict[str, Any]:
    """The load generator, the same for every system: `clients` threads, each sending one photo
    with `send` and waiting for its result before the next, until `n` photos are done. A
    request that fails (an HTTP error status, a timeout, a dropped connection) is counted."""
    samples: list[Sample] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=clients + 2)
    with httpx.Client(base_url=base_url, headers=headers, timeout=120, limits=limits) as client:

        def run(i: int) -> None:
            t = time.perf_counter()
            try:
                sample = send(client, images[i % len(images)])
                error = None if sample.ok else "task failed"
            except (httpx.HTTPError, TimeoutError) as exc:
                sample, error = Sample((time.perf_counter() - t) * 1000, False), _error_name(exc)
            with lock:
                samples.append(sample)
                if error:
                    errors[error] = errors.get(error, 0) + 1

        cpu_before, own_before = cpu_of(pids), os.times()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(run, range(n)))
        wall = time.perf_counter() - start
        cpu_after, own_after = cpu_of(pids), os.times()
    cpu = {k: cpu_after[k] - cpu_before[k] for k in pids}
    cpu["bench_clients"] = own_after.user + own_after.system - own_before.user - own_before.system
    return summarize(samples, wall, clients, cpu) | {"errors": errors}


def _error_name(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def summarize(
    samples: list[Sample], wall: float, clients: int, cpu: dict[str, float]
) -> dict[str, Any]:
    """Throughput and latency count the requests that succeeded; `failed` counts the rest."""
    latencies = [s.latency_ms for s in samples if s.ok] or [0.0]
    stages: dict[str, list[float]] = {}
    for sample in samples:
        for stage, value in sample.stages.items():
            stages.setdefault(stage, []).append(value)
    return {
        "clients": clients,
        "images": len(samples),
        "failed": sum(not s.ok for s in samples),
        "images_per_s": round(sum(s.ok for s in samples) / wall, 3),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "stage_p50_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
        "stage_p95_ms": {k: round(percentile(v, 95), 2) for k, v in stages.items()},
        "cpu_ms_per_image": {k: round(v * 1000 / len(samples), 1) for k, v in cpu.items()},
        "cpu_utilisation_of_2_cores": round(sum(cpu.values()) / wall / (os.cpu_count() or 1), 3),
    }
