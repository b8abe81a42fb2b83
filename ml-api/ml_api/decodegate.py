"""The API's memory for decoding upload pixels: a weighted semaphore, counted in bytes.

Most uploads are checked from their structure alone (ml_common.images.scan_image); the rest
(WebP, GIF, RLE BMP) decode whole, and a few KB can ask for hundreds of MB. A decode waits here,
on the event loop and holding no thread, until its bytes fit in the budget, so any number of
such uploads at once cost at most ML_DECODE_MEMORY_MB, and other uploads never queue behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ml_api.malloc import release_free_memory
from ml_common.errors import ImageTooLarge
from ml_common.images import DECODE_BYTES_PER_PIXEL, ImageInfo, ImageLimits, check_pixels

MIB = 1024 * 1024


class DecodeGate:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.free = budget_bytes
        self._changed = asyncio.Condition()

    def refuse_over_budget(self, info: ImageInfo, cost: int) -> None:
        """The per-format pixel budget: a decode larger than the whole budget never fits."""
        if cost > self.budget:
            most = self.budget // DECODE_BYTES_PER_PIXEL[info.format]
            raise ImageTooLarge(
                f"the {info.format} image has {info.width}x{info.height} pixels; this server "
                f"checks {info.format} images of at most {most} pixels"
            )

    @asynccontextmanager
    async def hold(self, info: ImageInfo, cost: int) -> AsyncIterator[None]:
        """Wait until `cost` bytes are free and keep them while the block runs.

        Whichever waiter fits goes first, so a small image never waits behind a large one.
        """
        self.refuse_over_budget(info, cost)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= cost)
            self.free -= cost
        try:
            yield
        finally:
            async with self._changed:
                self.free += cost
                self._changed.notify_all()


def decode_and_release(data: bytes, limits: ImageLimits) -> None:
    """`check_pixels`, then the decode's memory back to the system before the budget frees it."""
    try:
        check_pixels(data, limits)
    finally:
        release_free_memory()
