"""Pixel dimensions an encoded image claims, read from its first bytes only (no decoder).

Why: the server's front end refuses decompression bombs (a 33-byte PNG claiming 60000x60000)
before they take a queue slot, cheaply enough to do for every message of a flood, and without
trusting anything a decoder would check later (the PNG CRC, the rest of the file). Anything this
cannot read returns None and is left to the full, guarded decode in the worker.
PNG (IHDR), JPEG (first SOFn), WebP (VP8, VP8L, VP8X), GIF, BMP and TIFF (first IFD).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PEEK_BYTES = 256 << 10  # JPEG APPn segments (EXIF, ICC) can push the SOF marker this far in

# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC): the frame header with the size
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a segment


class ImageSize(NamedTuple):
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_size(data: bytes | bytearray | memoryview) -> ImageSize | None:
    """The (format, width, height) the header claims; None when it is no format known here,
    truncated, or claims a zero size."""
    head = bytes(memoryview(data)[:PEEK_BYTES])
    for reader in (_png, _jpeg, _webp, _gif, _bmp, _tiff):
        try:
            size = reader(head)
        except (struct.error, IndexError, ValueError):  # truncated: a short unpack
            size = None
        if size is not None:
            return size if size.width > 0 and size.height > 0 else None
    return None


def _png(b: bytes) -> ImageSize | None:
    if not b.startswith(b"\x89PNG\r\n\x1a\n") or b[12:16] != b"IHDR":
        return None
    w, h = struct.unpack_from(">II", b, 16)  # the CRC after it is deliberately not checked
    return ImageSize("PNG", w, h)


def _jpeg(b: bytes) -> ImageSize | None:
    if not b.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 1 < len(b):
        if b[i] != 0xFF:
            return None  # not at a marker: corrupt
        while i < len(b) and b[i] == 0xFF:  # fill bytes
            i += 1
        marker = b[i]
        i += 1
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack_from(">H", b, i)
        if marker in _JPEG_SOF:
            h, w = struct.unpack_from(">HH", b, i + 3)
            return ImageSize("JPEG", w, h)
        if length < 2:
            return None
        i += length
    return None


def _webp(b: bytes) -> ImageSize | None:
    if b[:4] != b"RIFF" or b[8:12] != b"WEBP":
        return None
    chunk = b[12:16]
    if chunk == b"VP8 ":
        if b[23:26] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack_from("<HH", b, 26)
        return ImageSize("WEBP", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        if b[20] != 0x2F:
            return None
        (bits,) = struct.unpack_from("<I", b, 21)
        return ImageSize("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return ImageSize("WEBP", w, h) if len(b) >= 30 else None
    return None


def _gif(b: bytes) -> ImageSize | None:
    if b[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    w, h = struct.unpack_from("<HH", b, 6)
    return ImageSize("GIF", w, h)


def _bmp(b: bytes) -> ImageSize | None:
    if b[:2] != b"BM":
        return None
    (header,) = struct.unpack_from("<I", b, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack_from("<HH", b, 18)
    else:
        w, h = struct.unpack_from("<ii", b, 18)
    return ImageSize("BMP", abs(w), abs(h))  # a negative height means top-down rows


def _tiff(b: bytes) -> ImageSize | None:
    if b[:4] == b"II*\x00":
        e = "<"
    elif b[:4] == b"MM\x00*":
        e = ">"
    else:
        return None
    (ifd,) = struct.unpack_from(e + "I", b, 4)
    (n,) = struct.unpack_from(e + "H", b, ifd)
    size: dict[int, int] = {}
    for k in range(min(n, 4096)):
        tag, typ, _count = struct.unpack_from(e + "HHI", b, ifd + 2 + 12 * k)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = {3: "H", 4: "I"}.get(typ)
            if fmt is None:
                return None
            (size[tag],) = struct.unpack_from(e + fmt, b, ifd + 2 + 12 * k + 8)
            if len(size) == 2:
                return ImageSize("TIFF", size[256], size[257])
    return None
