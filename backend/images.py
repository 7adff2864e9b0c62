"""The one image decoder: client bytes, CLI files, batch and NeRF frames all come through here.

Why one: photographs arrive rotated (EXIF), 16-bit, greyscale, CMYK, paletted, as TIFF, and far
bigger than the model needs. ``open_image`` handles the container (limits on the header, format
allow-list, JPEG draft decoding, orientation); ``decode_image`` turns it into the uint8 RGB/RGBA the
reconstruction uses, scaled down to ``WORK_SIDE``. Size refusals are kept only for byte limits and
decompression-bomb pixel counts; their numbers and the check are ``limits.py``'s.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .limits import DECODE_PIXELS, MAX_IMAGE_BYTES, check_image
from .ops import JobError

WORK_SIDE = 1024  # longest side after decoding; the model sees a 64x64 crop, lifting <= 1 Mpx
FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "TIFF"}  # MPO: phone JPEGs with a preview picture
ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}


def _clean(exc: BaseException) -> str:
    """An exception's text without Python object reprs (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc))[:160]


def open_image(data: bytes | memoryview, name: str = "image", max_pixels: int = DECODE_PIXELS,
               max_bytes: int = MAX_IMAGE_BYTES, max_side: int | None = WORK_SIDE) -> Image.Image:
    """Encoded bytes -> a loaded, upright PIL image (any mode). JPEGs bigger than ``max_side`` are
    decoded at a reduced DCT scale (``draft``), which is what makes a 24 Mpx photo cheap."""
    check_image(name, len(data), None, max_bytes, max_pixels)
    if len(data) == 0:
        raise JobError("BAD_INPUT", f"{name} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            im = Image.open(io.BytesIO(bytes(data)))
            w, h = im.size  # read from the header only; no pixels decoded yet
            check_image(name, 0, (w, h), max_bytes, max_pixels)
            if im.format not in FORMATS:
                raise JobError("BAD_INPUT", f"{name}: format {im.format} is not supported; "
                               "send PNG, JPEG, WebP or TIFF")
            if max_side and im.format in {"JPEG", "MPO"} and max(w, h) > max_side:
                s = max_side / max(w, h)
                im.draft(im.mode, (max(1, int(w * s + 0.999)), max(1, int(h * s + 0.999))))
            im.load()
            im = ImageOps.exif_transpose(im) or im
    except JobError:
        raise
    except Image.DecompressionBombError:
        raise JobError("TOO_LARGE", f"{name}: the header claims too many pixels; the limit is "
                       f"{max_pixels}") from None
    except UnidentifiedImageError:
        raise JobError("BAD_INPUT", f"{name} is not a recognised image (send PNG, JPEG, WebP or "
                       "TIFF)") from None
    except (OSError, SyntaxError, ValueError, TypeError, struct.error, EOFError) as exc:
        raise JobError("BAD_INPUT", f"{name} could not be decoded ({exc.__class__.__name__}: "
                       f"{_clean(exc)})") from None
    return im


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)


def grey_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit int / float greyscale -> uint8, keeping what it looks like (not all white)."""
    a = arr.astype(np.float64)
    if mode == "F":
        top = 1.0 if np.nanmax(a, initial=0.0) <= 1.0 else float(np.nanmax(a))
    elif mode.startswith("I;16"):
        top = 65535.0
    else:  # "I": 16-bit data in 32-bit ints (TIFF, old Pillow PNGs) or wider
        m = float(a.max(initial=0.0))
        top = 255.0 if m <= 255 else 65535.0 if m <= 65535 else m
    a = np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0)
    return np.clip(np.round(a / max(top, 1e-12) * 255.0), 0, 255).astype(np.uint8)


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any mode -> "RGB" or "RGBA" (alpha kept when the image has one)."""
    if im.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        return Image.fromarray(grey_to_uint8(np.asarray(im), im.mode), "L").convert("RGB")
    if im.mode in {"RGB", "RGBA"}:
        return im
    return im.convert("RGBA" if has_alpha(im) else "RGB")


def decode_image(data: bytes | memoryview, max_pixels: int = DECODE_PIXELS,
                 max_bytes: int = MAX_IMAGE_BYTES, name: str = "image",
                 max_side: int | None = WORK_SIDE) -> np.ndarray:
    """Encoded PNG/JPEG/WebP/TIFF bytes -> HxWx3 or HxWx4 uint8, upright, longest side at most
    ``max_side`` (Lanczos; Pillow premultiplies alpha while resizing)."""
    im = to_rgb8(open_image(data, name, max_pixels, max_bytes, max_side))
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(im, dtype=np.uint8).copy()


def decode_mask(data: bytes | memoryview, shape: tuple[int, int], max_pixels: int = DECODE_PIXELS,
                max_bytes: int = MAX_IMAGE_BYTES, name: str = "mask") -> np.ndarray:
    """A user's mask image -> float32 (H,W) in [0,1] at ``shape``: its alpha when it has a real
    one, else its grey level (white = object). The aspect ratio must match the image's."""
    im = open_image(data, name, max_pixels, max_bytes, max_side=None)
    h, w = shape
    if abs(im.width / im.height - w / h) > 0.02 * (w / h):
        raise JobError("BAD_INPUT", f"{name} is {im.width}x{im.height} but the image is {w}x{h} "
                       "(after orientation); give a mask of the image's shape")
    rgb = to_rgb8(im)
    if rgb.mode == "RGBA" and rgb.getextrema()[3][0] < 250:
        g = rgb.getchannel("A")
    else:
        g = rgb.convert("L")
    if g.size != (w, h):
        g = g.resize((w, h), Image.Resampling.BILINEAR)
    m = np.asarray(g, dtype=np.float32) / 255.0
    if m.max() < 0.5:
        raise JobError("BAD_INPUT", f"{name} marks no object (it is all black or transparent); "
                       "white or opaque = object")
    return m
