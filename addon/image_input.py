"""The picture as Blender sees it, as the backend gets it: 8-bit sRGB PNG at a working size.

Every source (an Image datablock, a file, an Image Editor's image) is decoded by Blender, so any
format Blender reads works (EXR, HDR, TIFF, 16-bit PNG, ...) and the backend sees the same pixels
as the artist. A large picture is scaled by Blender (C code, on a temporary copy) to at most
``WORKING_SIZE`` pixels on its long side before its pixels are read, so a 24 MP photo costs a few
megabytes, not gigabytes of floats. Float buffers (scene-linear, premultiplied) are turned into
straight-alpha display sRGB; byte buffers are already display values.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
import numpy as np

from .core.client import BackendError
from .core.colour import linear_to_srgb

WORKING_SIZE = 1024  # long side in pixels: far above what the model crops to, small on the wire


def save_png(rgba: np.ndarray, path: str) -> None:
    """(H, W, 4) or (H, W, 3) uint8, top row first -> an 8-bit PNG file, written by Blender from a
    temporary byte Image (removed again): RGB stays RGB, every value arrives unchanged."""
    h, w, c = rgba.shape
    img = bpy.data.images.new("Image2Points PNG", w, h, alpha=c == 4)
    try:
        px = np.ones((h, w, 4), np.float32)
        px[..., :c] = rgba[::-1] / np.float32(255.0)
        pixels: Any = img.pixels
        pixels.foreach_set(px.ravel())
        img.filepath_raw = path
        img.file_format = "PNG"
        img.save()
    finally:
        bpy.data.images.remove(img)


def png_bytes(rgba: np.ndarray) -> bytes:
    """``save_png`` into a temporary file (never the add-on folder), as bytes."""
    with tempfile.TemporaryDirectory(prefix="i2p-png-") as tmp:
        path = os.path.join(tmp, "image.png")
        save_png(rgba, path)
        with open(path, "rb") as f:
            return f.read()


def unreadable(img: Any, label: str) -> BackendError:
    """Why an Image has no pixels, naming it: its file is gone, or Blender cannot decode it."""
    if getattr(img, "type", "") in {"RENDER_RESULT", "COMPOSITING"}:
        return BackendError("BAD_INPUT", f"could not read image '{label}': Blender gives scripts no "
                            "pixels of a render result; save it (Image > Save As) and open that file")
    path = bpy.path.abspath(img.filepath, library=img.library) if img.filepath else ""
    if img.source == "FILE" and img.packed_file is None and path and not os.path.isfile(path):
        return BackendError("BAD_INPUT", f"could not read image '{label}': its file '{path}' is "
                            "missing (find it with File > External Data > Find Missing Files)")
    return BackendError("BAD_INPUT", f"could not read image '{label}': Blender cannot decode it "
                        "(a damaged file, or a format Blender does not open)")


def image_size(img: Any, label: str) -> tuple[int, int]:
    """(w, h) of an Image datablock that has pixels; a coded error naming it otherwise."""
    try:
        w, h = int(img.size[0]), int(img.size[1])
    except (RuntimeError, ReferenceError) as exc:
        raise BackendError("BAD_INPUT", f"could not read image '{label}': {exc}") from None
    if w * h == 0:
        raise unreadable(img, label)
    return w, h


def image_pixels_u8(img: Any, label: str = "") -> np.ndarray:
    """(H, W, 4) uint8 straight-alpha display pixels of an Image datablock, top row first."""
    label = label or str(img.name)
    w, h = image_size(img, label)
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    rgba = px.reshape(h, w, 4)[::-1].copy()
    if img.is_float:  # float buffers are scene-linear and premultiplied; the backend wants sRGB
        a = rgba[..., 3:4]
        c = np.clip(np.divide(rgba[..., :3], a, out=rgba[..., :3].copy(), where=a > 1e-6), 0.0, 1.0)
        rgba[..., :3] = linear_to_srgb(c)
    return (np.clip(rgba, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def for_backend(rgba: np.ndarray) -> bytes:
    """PNG as sent: RGB when every pixel is opaque (no alpha means no mask: the backend then
    finds the object itself), RGBA when the alpha channel carries one."""
    return png_bytes(rgba[..., :3] if rgba[..., 3].min() == 255 else rgba)


def working_size(w: int, h: int, limit: int = WORKING_SIZE) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most ``limit`` (never up), aspect kept."""
    scale = min(1.0, limit / max(w, h, 1))
    return max(1, round(w * scale)), max(1, round(h * scale))


def image_png(img: Any, label: str = "", limit: int = WORKING_SIZE) -> bytes:
    """An Image datablock as the backend gets it: PNG of its pixels, at most ``limit`` px long.
    A larger picture is scaled on a temporary copy; the artist's Image is left as it was."""
    label = label or str(img.name)
    w, h = image_size(img, label)
    tw, th = working_size(w, h, limit)
    if (tw, th) == (w, h):
        return for_backend(image_pixels_u8(img, label))
    small = img.copy()
    try:
        small.scale(tw, th)
        return for_backend(image_pixels_u8(small, label))
    finally:
        bpy.data.images.remove(small)


def file_png(path: str, limit: int = WORKING_SIZE) -> bytes:
    """An image file, decoded by Blender (any format it opens), as the backend gets it; the
    temporary Image is removed again."""
    label = os.path.basename(path)
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as exc:
        why = str(exc).removeprefix("Error: ").strip()
        raise BackendError("BAD_INPUT", f"could not read image '{label}': {why}") from None
    try:
        if img.size[0] * img.size[1] == 0:
            raise BackendError("BAD_INPUT", f"could not read image '{label}': not an image Blender "
                               "can read (a damaged file, or a format Blender does not open)")
        tw, th = working_size(int(img.size[0]), int(img.size[1]), limit)
        if (tw, th) != tuple(img.size):
            img.scale(tw, th)  # our own temporary Image: scale it in place
        return for_backend(image_pixels_u8(img, label))
    finally:
        bpy.data.images.remove(img)
