"""GIF, WebP and BMP structure checks: cut files refused without a decode, bombs priced."""

from __future__ import annotations

import asyncio
import io
from unittest.mock import patch

import pytest
from PIL import Image

from ml_api.decodegate import MIB, DecodeGate
from ml_common.errors import ImageTooLarge, InvalidImage
from ml_common.images import ImageInfo, ImageLimits, inspect_image, scan_image

NOISE = Image.effect_noise((120, 80), 60).convert("RGB")
LIMITS = ImageLimits(50_000_000, 30_000, 20)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


SAMPLES = {
    "GIF": encode(NOISE.convert("P"), "GIF"),
    "WEBP": encode(NOISE, "WEBP"),
    "WEBP-lossless": encode(NOISE, "WEBP", lossless=True),
    "BMP": encode(NOISE, "BMP"),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_a_cut_file_is_refused_from_its_structure_without_a_decode(name: str) -> None:
    data = SAMPLES[name]
    assert inspect_image(data, LIMITS).width == 120
    with patch.object(Image.Image, "load", side_effect=AssertionError("decoded")) as load:
        for cut in (len(data) // 2, len(data) - 20):
            with pytest.raises(InvalidImage, match="truncated"):
                scan_image(data[:cut], LIMITS)
    assert load.call_count == 0


def test_an_uncompressed_bmp_needs_no_decode_and_bitstreams_are_priced() -> None:
    assert scan_image(SAMPLES["BMP"], LIMITS)[1] == 0
    flat = Image.new("RGB", (16383, 2441), (1, 2, 3))
    info, cost = scan_image(encode(flat, "WEBP", lossless=True), LIMITS)
    assert (info.width, info.height) == (16383, 2441) and cost == 16383 * 2441 * 16
    assert scan_image(SAMPLES["GIF"], LIMITS)[1] == 120 * 80 * 2


def test_the_gate_runs_decodes_within_its_budget_and_refuses_what_never_fits() -> None:
    gate = DecodeGate(100 * MIB)
    info = ImageInfo("WEBP", "webp", "image/webp", 10, 10)
    held: list[int] = []

    async def decode(cost: int) -> None:
        async with gate.hold(info, cost):
            held.append(gate.budget - gate.free)
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        await asyncio.gather(*(decode(60 * MIB) for _ in range(3)), decode(30 * MIB))

    asyncio.run(scenario())
    assert max(held) <= 100 * MIB and len(held) == 4 and gate.free == gate.budget
    with pytest.raises(ImageTooLarge, match="at most 6553600 pixels"):
        gate.refuse_over_budget(info, 101 * MIB)
