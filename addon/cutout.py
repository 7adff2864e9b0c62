"""The cut-out the backend used, shown to the artist: the input with its background dimmed.

``dimmed`` is pure numpy (tested without Blender); ``show_cutout`` writes it into one Image
datablock (replaced on every run, never in draw()) whose preview the panel displays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PREVIEW_NAME = "Image2Points Cut-out"
PREVIEW_SIDE = 256


def dimmed(mask: np.ndarray, rgba: np.ndarray | None = None, side: int = PREVIEW_SIDE) -> np.ndarray:
    """(h,w,4) uint8 preview, longest side <= ``side``, top row first: ``rgba`` (any size with the
    mask's aspect) with the background at 25% brightness; the mask alone when there is no input."""
    mask = np.asarray(mask, np.uint8)
    h, w = mask.shape
    s = min(1.0, side / max(h, w))
    oh, ow = max(1, round(h * s)), max(1, round(w * s))
    m = mask[(np.arange(oh) * h // oh)[:, None], (np.arange(ow) * w // ow)[None]].astype(np.float32) / 255
    if rgba is None or abs(rgba.shape[1] / rgba.shape[0] - w / h) > 0.02 * w / h:
        rgb = np.repeat((60 + 195 * m)[..., None], 3, 2)
    else:
        ih, iw = rgba.shape[:2]
        src = rgba[(np.arange(oh) * ih // oh)[:, None], (np.arange(ow) * iw // ow)[None], :3].astype(np.float32)
        rgb = src * (0.25 + 0.75 * m[..., None])
    out = np.empty((oh, ow, 4), np.uint8)
    out[..., :3] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def show_cutout(mask: np.ndarray, rgba: np.ndarray | None = None) -> Any:
    """Write ``dimmed(mask, rgba)`` into the preview Image datablock (made once) and return it."""
    import bpy

    px = dimmed(mask, rgba)
    h, w = px.shape[:2]
    img: Any = bpy.data.images.get(PREVIEW_NAME)
    if img is None or tuple(img.size) != (w, h):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_NAME, w, h, alpha=True)
    img.pixels.foreach_set((px[::-1].astype(np.float32) / 255.0).ravel())
    img.update()
    img.preview_ensure()
    img.preview.reload()
    return img
