"""One key pressing on memory the others share, against a real stack: decompression bombs."""

from __future__ import annotations

import struct
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveStack, encode, launch_stack

pytestmark = pytest.mark.integration
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
