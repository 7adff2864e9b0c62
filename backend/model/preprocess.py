"""Image -> network input. Training images and user images go through exactly this function.

Steps: (1) object mask = alpha channel if present (and not fully opaque), else the automatic
foreground (``backend.segment.object_alpha``); (2) crop a square centred on the mask's bounding
box with a margin (``MARGIN`` of the box's larger side each way), padding with background; (3) resize to ``SIZE`` x ``SIZE`` with antialiasing. Output: float32 (4, SIZE, SIZE) —
RGB premultiplied by alpha (black background) and alpha — quantised to multiples of 1/255 so a
cached uint8 copy is bit-identical to what inference computes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..segment import object_alpha

SIZE = 64
MARGIN = 0.08


def crop_box(alpha: np.ndarray, margin: float = MARGIN) -> tuple[int, int, int]:
    """Square (top, left, side) around the mask bbox, centred on it, side = (1 + 2*margin) * max(h, w)."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) == 0:
        raise ValueError("no object found in the image (empty alpha / nothing differs from the border)")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(np.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def preprocess(image: np.ndarray, size: int = SIZE, alpha: np.ndarray | None = None) -> np.ndarray:
    """HxWx3/4 uint8 image -> (4, size, size) float32 network input (see module docstring);
    ``alpha`` (H,W) in [0,1], when given, is the object mask instead of ``object_alpha``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if alpha is not None and alpha.shape != image.shape[:2]:
        raise ValueError(f"mask shape {alpha.shape} differs from the image's {image.shape[:2]}")
    a = object_alpha(image) if alpha is None else np.asarray(alpha, np.float32)
    top, left, side = crop_box(a)
    rgba = np.concatenate([image[..., :3].astype(np.float32) / 255.0 * a[..., None], a[..., None]], -1)
    h, w = a.shape
    canvas = np.zeros((side, side, 4), np.float32)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, h), min(left + side, w)
    canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgba[sy0:sy1, sx0:sx1]
    t = torch.from_numpy(canvas).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    out = torch.round(out.clamp(0, 1) * 255) / 255
    return out.numpy().astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Cache form of a preprocess() output (exact, as values are multiples of 1/255)."""
    return np.round(x * 255).astype(np.uint8)


def from_uint8(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0
