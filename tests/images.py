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


def encoded(arr_or_im, fmt: str = "PNG", **save: object) -> bytes:
    """Any array / PIL image -> bytes in ``fmt`` (extra keywords go to ``Image.save``)."""
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def quadrants(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB with four differently coloured quadrants: any rotation or flip shows."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (220, 30, 30)
    img[: h // 2, w // 2:] = (30, 200, 40)
    img[h // 2:, : w // 2] = (40, 40, 210)
    img[h // 2:, w // 2:] = (230, 220, 40)
    return img


def exif_rotated(arr: np.ndarray, fmt: str = "PNG", orientation: int = 6) -> bytes:
    """``arr`` stored as a camera would store a portrait photo: pixels sideways + EXIF orientation
    tag 6 (display = the stored pixels rotated 90 degrees clockwise). Decoded right, it is ``arr``."""
    stored = Image.fromarray(np.rot90(arr, 1).copy())  # counter-clockwise, undone by tag 6
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def photo_like(h: int, w: int, seed: int = 0, scale: float = 1.0,
               centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """A smooth RGB 'photo': a warm object-like blob on a cool gradient (cheap at any size);
    ``scale`` and ``centre`` (fractions of w, h) place the blob."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = 60 + 40 * yy / h
    img[..., 1] = 90 + 30 * xx / w
    img[..., 2] = 140
    img[photo_mask(h, w, scale, centre)] = (200, 90, 40)
    return img


def photo_mask(h: int, w: int, scale: float = 1.0, centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """The true object mask of ``photo_like(h, w, scale=, centre=)`` (bool)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return ((xx - centre[0] * w) / (0.25 * scale * w)) ** 2 + ((yy - centre[1] * h) / (0.3 * scale * h)) ** 2 < 1


def inseparable_photo(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A close-up whose textured 'object' runs to a thin frame on every side: no cut can tell the
    object from the background, as with a motorcycle photographed filling the frame."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 120, np.uint8)
    img[6:-6, 6:-6] = np.clip(rng.random((h - 12, w - 12, 1)) * 60 + np.array([190, 110, 50]), 0, 255)
    return img
