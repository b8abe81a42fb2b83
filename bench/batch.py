"""Batches on a running stack: throughput of one 1,000-image batch against the same images sent
one by one, and the latency of single uploads with 2,000 batch items queued against idle.

The single-upload path is `e2e.drive` (threads that each post and wait); the batch path is one
zip through POST /api/v1/batches, timed from the upload to the batch finishing. With batch
items queued, single uploads go first (queue priorities), so their p95 should stay within
twice the idle p95.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from typing import Any

import httpx
from e2e import bench_end_to_end, percentile, request

logger = logging.getLogger("bench")


def _zip(images: list[bytes], n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for i in range(n):
            archive.writestr(f"photo-{i:05}.jpg", images[i % len(images)])
    return buf.getvalue()


def _post_batch(client: httpx.Client, images: list[bytes], n: int) -> str:
    r = client.post("/api/v1/batches", files={"files": ("b.zip", _zip(images, n))}, timeout=600)
    r.raise_for_status()
    return str(r.json()["batch_id"])


def _wait_batch(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/batches/{batch_id}", params={"limit": 1}).json()
        if body["finished"]:
            return body
        time.sleep(0.5)


def batch_throughput(api_url: str, key: str, images: list[bytes], n: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=60) as client:
        t = time.perf_counter()
        batch_id = _post_batch(client, images, n)
        upload_s = time.perf_counter() - t
        counts = _wait_batch(client, batch_id)["counts"]
        wall = time.perf_counter() - t
    return {
        "images": n,
        "upload_s": round(upload_s, 2),
        "wall_s": round(wall, 2),
        "images_per_s": round(n / wall, 2),
        "counts": counts,
    }


def _singles(client: httpx.Client, images: list[bytes], n: int) -> list[float]:
    return [request(client, images[i % len(images)]).latency_ms for i in range(n)]


def priority(
    api_url: str, key: str, images: list[bytes], queued: int, singles: int
) -> dict[str, Any]:
    """p95 of `singles` uploads one after another on the idle stack, then with `queued` batch
    items waiting (the batch is cancelled afterwards)."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=120) as client:
        idle = _singles(client, images, singles)
        batch_id = _post_batch(client, images, queued)
        loaded = _singles(client, images, singles)
        left = client.get(f"/api/v1/batches/{batch_id}", params={"limit": 1}).json()["counts"]
        client.delete(f"/api/v1/batches/{batch_id}").raise_for_status()
        _wait_batch(client, batch_id)
    idle_p95, loaded_p95 = percentile(idle, 95), percentile(loaded, 95)
    return {
        "singles": singles,
        "batch_items_queued": queued,
        "batch_items_still_queued_after": left.get("queued", 0),
        "idle_p95_ms": round(idle_p95, 1),
        "with_batch_p95_ms": round(loaded_p95, 1),
        "ratio": round(loaded_p95 / idle_p95, 2),
    }


def bench_batches(
    api_url: str, key: str, images: list[bytes], n: int, clients: int, pids: dict[str, list[int]]
) -> dict[str, Any]:
    """The batch figures of one stack: throughput against the single-upload path, priority."""
    logger.info("batch: %d images one by one (%d clients), then as one batch", n, clients)
    single = bench_end_to_end(api_url, key, images, n, clients, pids)
    batch = batch_throughput(api_url, key, images, n)
    logger.info("batch: single uploads with %d batch items queued", 2 * n)
    return {
        "single_upload_images_per_s": single["images_per_s"],
        "batch": batch,
        "batch_over_single": round(batch["images_per_s"] / single["images_per_s"], 2),
        "priority": priority(api_url, key, images, queued=2 * n, singles=20),
    }
