"""Small image fixtures made on the fly with Pillow (nothing downloaded)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def disc_rgba(size: int = 96, colour=(200, 60, 40)) -> np.ndarray:
    """An opaque coloured disc on transparent background: a valid, object-like input."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.35) ** 2
    img = np.zeros((size, size, 4), np.uint8)
    img[inside, :3] = colour
    img[inside, 3] = 255
    return img


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's calling card)."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)
