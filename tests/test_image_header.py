"""backend/image_header.py against Pillow: the size every format claims, from its first bytes."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import pytest
from images import bomb_png
from PIL import Image

from image2points.backend.image_header import image_size

FORMATS = [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("WEBP", {}),
           ("WEBP", {"lossless": True}), ("GIF", {}), ("BMP", {}), ("TIFF", {})]


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kw", FORMATS, ids=[f"{f}{'-' + '-'.join(k) if k else ''}"
                                                 for f, k in FORMATS])
@pytest.mark.parametrize("w,h", [(1, 1), (37, 91), (640, 3)])
def test_size_matches_pillow(fmt, kw, w, h):
    rng = np.random.default_rng(w * h)
    data = encode((rng.random((h, w, 3)) * 255).astype(np.uint8), fmt, **kw)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (w, h)
    assert image_size(data) == (fmt, w, h)


def test_webp_with_alpha_is_vp8x_and_read():
    data = encode(np.zeros((45, 70, 4), np.uint8), "WEBP")
    assert data[12:16] in (b"VP8X", b"VP8L")
    assert image_size(data) == ("WEBP", 70, 45)


def test_jpeg_size_is_found_after_a_large_exif_segment():
    im = Image.fromarray(np.zeros((30, 50, 3), np.uint8))
    exif = im.getexif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: pushes SOF ~60 KB in
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert buf.getvalue().index(b"\xff\xc0") > 60_000
    assert image_size(buf.getvalue()) == ("JPEG", 50, 30)


def test_bombs_are_read_without_trusting_the_crc():
    assert image_size(bomb_png()) == ("PNG", 100_000, 100_000)
    bad_crc = bytearray(bomb_png(60_000, 60_000))
    bad_crc[29:33] = b"\0\0\0\0"
    assert image_size(bytes(bad_crc[:33])) == ("PNG", 60_000, 60_000)
    assert image_size(b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03") == ("JPEG", 65535, 65535)
    assert image_size(b"GIF89a\xff\xff\xff\xff").pixels == 65535 ** 2


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0", b"\xff\xd8",
    b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\xff\xd8\xff\xda\x00\x08", b"RIFF\0\0\0\0WEBPVP8 ",
    b"GIF89a", b"BM", b"II*\x00\xff\xff\xff\x7f", b"not an image at all",
    struct.pack(">8sI4sII", b"\x89PNG\r\n\x1a\n", 13, b"IHDR", 0, 10),  # zero width
])
def test_truncated_or_unknown_is_none(data):
    assert image_size(data) is None


def test_mutated_headers_never_raise():
    """Whatever the bytes, an answer or None: the front end calls this on every submit."""
    rng = random.Random(5)
    seeds = [encode(np.zeros((8, 8, 3), np.uint8), f, **kw) for f, kw in FORMATS]
    for _ in range(3000):
        b = bytearray(rng.choice(seeds)[: rng.randrange(1, 200)])
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        got = image_size(bytes(b))
        assert got is None or (got.width > 0 and got.height > 0)
