"""Seeing a cloud from the input camera: a numpy z-buffer splat and the fidelity scores.

Why apart from ``lift``: the eval scores any cloud (the model's own too) through the same fitted
``lift.InputView``, and tests check the lifted one with it.
"""

from __future__ import annotations

import numpy as np

from .lift import InputView


def render_input_view(xyz: np.ndarray, rgb: np.ndarray, view: InputView, R: np.ndarray,
                      t: np.ndarray, footprint: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Numpy z-buffer splat of a cloud into the working image of ``view`` (camera R, t: the
    front view). Each point covers a square of about ``footprint`` working pixels a side (1: its
    own pixel; a 64x64 model point covers one map pixel, ``ORTHO_S * 2 / 64 / view.a``).
    Returns (hit (h,w) bool, colour (h,w,3) uint8 of the nearest point per pixel)."""
    h, w = view.shape
    cam = np.asarray(xyz, np.float64) @ R.T + t
    d = -cam[:, 2]
    c, r = view.to_pixels(cam[:, 0], cam[:, 1], d)
    k = int(round((footprint - 1) / 2))
    offs = np.arange(-k, k + 1)
    ci = (np.floor(c)[:, None, None] + offs[None, None, :]).astype(np.int64)
    ri = (np.floor(r)[:, None, None] + offs[None, :, None]).astype(np.int64)
    ci, ri = np.broadcast_arrays(ci, ri)
    src = np.broadcast_to(np.arange(len(xyz))[:, None, None], ci.shape).ravel()
    ci, ri = ci.ravel(), ri.ravel()
    ok = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h)
    key, src = ri[ok] * w + ci[ok], src[ok]
    order = np.lexsort((d[src], key))  # by pixel, nearest first
    key, src = key[order], src[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    hit = np.zeros(h * w, bool)
    col = np.zeros((h * w, 3), np.uint8)
    hit[key[first]] = True
    col[key[first]] = np.asarray(rgb)[src[first]]
    return hit.reshape(h, w), col.reshape(h, w, 3)


def input_view_scores(hit: np.ndarray, col: np.ndarray, mask: np.ndarray, image_rgb: np.ndarray
                      ) -> dict[str, float]:
    """Silhouette IoU with the input mask and mean absolute colour error (0-255 scale) of the
    visible points against the input pixels, over the pixels both cover."""
    inter, union = (hit & mask).sum(), (hit | mask).sum()
    both = hit & mask
    err = np.abs(col[both].astype(np.float64) - image_rgb[both].astype(np.float64)).mean() if both.any() else 255.0
    return {"iou": float(inter / max(union, 1)), "colour_mae": float(err)}
