"""Decode client image bytes safely: size limits are checked on the header, before pixels."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .ops import JobError

DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_BYTES = 64 << 20


def decode_image(data: bytes | memoryview, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Encoded PNG/JPEG/WebP bytes -> HxWx3 or HxWx4 uint8 (alpha kept when present)."""
    if len(data) > max_bytes:
        raise JobError("TOO_LARGE", f"image is {len(data) >> 20} MB; the limit is {max_bytes >> 20} MB")
    if len(data) == 0:
        raise JobError("BAD_INPUT", "image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(bytes(data)))
            w, h = im.size  # read from the header only; no pixels decoded yet
            if w * h > max_pixels:
                raise JobError("TOO_LARGE", f"image is {w}x{h} pixels; the limit is {max_pixels} "
                               "pixels. Scale it down first.")
            if im.format not in {"PNG", "JPEG", "WEBP"}:
                raise JobError("BAD_INPUT", f"image format {im.format} is not supported; "
                               "send PNG, JPEG or WebP")
            im.load()
    except JobError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise JobError("TOO_LARGE", f"image header claims too many pixels ({exc}); the limit is "
                       f"{max_pixels}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise JobError("BAD_INPUT", f"image could not be decoded ({exc.__class__.__name__}: "
                       f"{str(exc)[:120]})") from None
    has_alpha = im.mode in {"RGBA", "LA", "PA"} or (im.mode == "P" and "transparency" in im.info)
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8).copy()
