"""GIF, WebP and BMP structure checked from their headers and frame tables, without decoding pixels.

A few KB of these formats can declare 40 million pixels (a one-colour lossless WebP of
16383 x 2441 is 1.6 KB and takes 600 MB to decode), so the upload check walks their containers
first: a cut or malformed file is refused here, for the price of reading its block lengths.
"""

from __future__ import annotations

import struct

from ml_common.errors import InvalidImage

GIF_TRAILER, GIF_EXTENSION, GIF_IMAGE = 0x3B, 0x21, 0x2C
BMP_UNCOMPRESSED = frozenset({0, 3, 6})  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS
WEBP_BITSTREAMS = frozenset({b"VP8 ", b"VP8L", b"ANMF"})


def check_gif(data: bytes) -> None:
    """Raise InvalidImage unless the GIF's blocks are whole up to the end of its first frame."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise InvalidImage("the GIF header is truncated or corrupt")
    pos = 13 + _colour_table_size(data[10])
    while pos < len(data):
        introducer = data[pos]
        if introducer == GIF_EXTENSION:
            pos = _sub_blocks_end(data, pos + 2)
        elif introducer == GIF_IMAGE:
            if pos + 10 > len(data):
                break
            pos += 10 + _colour_table_size(data[pos + 9])
            _sub_blocks_end(data, pos + 1)  # after the LZW minimum code size
            return
        elif introducer == GIF_TRAILER:
            raise InvalidImage("the GIF has no frame")
        else:
            raise InvalidImage(f"the GIF is corrupt: unknown block 0x{introducer:02x} at {pos}")
    raise InvalidImage("the GIF is truncated before the end of its first frame")


def _colour_table_size(flags: int) -> int:
    return 3 * (2 << (flags & 7)) if flags & 0x80 else 0


def _sub_blocks_end(data: bytes, pos: int) -> int:
    """The position after the data sub-blocks starting at `pos` and their 0 terminator."""
    while pos < len(data):
        size = data[pos]
        if size == 0:
            return pos + 1
        pos += 1 + size
    raise InvalidImage("the GIF is truncated inside a block")


def check_webp(data: bytes) -> None:
    """Raise InvalidImage unless the WebP's RIFF chunks are whole and one of them is a bitstream."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise InvalidImage("the WebP header is truncated or corrupt")
    end = 8 + int.from_bytes(data[4:8], "little")
    if end > len(data):
        raise InvalidImage(f"the WebP is truncated: {len(data)} of its {end} bytes")
    pos, chunks = 12, set()
    while pos + 8 <= end:
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)
        if pos > end + (size & 1):  # a last odd chunk may omit its padding byte
            raise InvalidImage(f"the WebP is truncated inside its {fourcc!r} chunk")
        chunks.add(bytes(fourcc))
    if not chunks & WEBP_BITSTREAMS:
        raise InvalidImage("the WebP has no image data")


def bmp_is_uncompressed(data: bytes) -> bool:
    """Whether the BMP's rows are stored plainly; if so, raise InvalidImage unless all are there.

    A compressed (RLE) BMP can only be checked by decoding it: False.
    """
    if len(data) < 26 or data[:2] != b"BM":
        raise InvalidImage("the BMP header is truncated or corrupt")
    offset, header = struct.unpack_from("<II", data, 10)
    if header == 12:  # OS/2 1.x: never compressed
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
        compression = 0
    elif len(data) >= 34:
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    else:
        raise InvalidImage("the BMP header is truncated")
    if compression not in BMP_UNCOMPRESSED:
        return False
    needed = offset + (abs(width) * bits + 31) // 32 * 4 * abs(height)
    if len(data) < needed:
        raise InvalidImage(f"the BMP is truncated: {len(data)} of its {needed} bytes")
    return True
