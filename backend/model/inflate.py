"""Silhouette inflation (Teddy / Monster Mash style): a height field from the mask alone.

Why: from one image, the depth of a smooth object is mostly fixed by its outline: thick where the
silhouette is wide, thin near the rim. A height ``h = sqrt(d * (2 r - d))`` over the distance ``d``
to the outline (``r`` its largest value) turns a disc into a sphere and a bar into a tube. It is an
evaluation baseline (``evaluate.inflated_points``) and, given to the generator as input channels
(``GeneratorConfig.prior = "inflate"``), a prior the network only has to correct.

Torch, no scipy: the distance comes from repeated erosion (alternating 3x3 square and cross, an
octagonal metric within ~8% of Euclidean), so the same code runs in training, evaluation and the
server, batched, and a checkpoint carries no extra preprocessing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def distance_to_outline(mask: torch.Tensor, max_steps: int | None = None) -> torch.Tensor:
    """mask (B,1,H,W) in {0,1} -> distance in pixels from each inside pixel to the outside (the
    frame counts as outside), 0 outside; octagonal metric (alternating square / cross erosion)."""
    m = (mask > 0.5).float()
    d = torch.zeros_like(m)
    steps = max_steps or (max(m.shape[-2:]) + 1) // 2
    for k in range(steps):
        if not bool(m.any()):
            break
        d += m
        if k % 2 == 0:  # square 3x3: min-pool as -maxpool(-x)
            m = -F.max_pool2d(F.pad(-m, (1, 1, 1, 1), value=0.0), 3, 1)
        else:  # cross: min over the 4-neighbourhood
            p = F.pad(m, (1, 1, 1, 1), value=0.0)
            m = torch.minimum(torch.minimum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]),
                              torch.minimum(p[..., :-2, 1:-1], p[..., 2:, 1:-1])) * m
    # the first ring of inside pixels is half a pixel from the outline, not a whole one
    return torch.clamp(d - 0.5, min=0.0) * (mask > 0.5).float()


def height_field(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha (B,1,H,W) in [0,1] -> (d, h), both (B,1,H,W) in image-width units of the [-1, 1] crop
    (a pixel is 2/W): d the distance to the outline, h = sqrt(d (2 r - d)) with r the largest d."""
    w = alpha.shape[-1]
    d = distance_to_outline(alpha) * (2.0 / w)
    r = d.amax(dim=(-2, -1), keepdim=True)
    h = torch.sqrt(torch.clamp(d * (2 * r - d), min=0.0))
    return d, h


def inflated_points(alpha: np.ndarray, scale: float) -> np.ndarray:
    """The inflation baseline's cloud for one (H,W) mask, x right, y up, in the crop's [-1, 1]
    units: every inside pixel at z = +-scale*h (front and back sheets meeting at the outline),
    plus points down each pixel's steep side to its lowest neighbour, a pixel apart, so the
    near-vertical band at the rim is sampled like the rest of the surface."""
    a = torch.from_numpy((np.asarray(alpha) > 0.5).astype(np.float32))[None, None]
    _, h = height_field(a)
    h = scale * h[0, 0].numpy()
    hh, ww = h.shape
    low = -torch.nn.functional.max_pool2d(-torch.from_numpy(np.pad(h, 1))[None, None], 3, 1)[0, 0].numpy()
    ys, xs = np.nonzero(a[0, 0].numpy())
    if len(xs) == 0:
        return np.zeros((0, 3), np.float32)
    step = 2.0 / ww
    x, y = (xs + 0.5) / ww * 2 - 1, 1 - (ys + 0.5) / hh * 2
    top, floor = h[ys, xs], low[ys, xs]
    n = np.ceil((top - floor) / step).astype(int)  # points from top down to the lowest neighbour
    k = np.arange(n.max() + 1)
    sel = k[None, :] < np.maximum(n, 1)[:, None]
    z = (top[:, None] - k[None, :] * step)[sel]
    xx, yy = np.broadcast_to(x[:, None], sel.shape)[sel], np.broadcast_to(y[:, None], sel.shape)[sel]
    z = np.maximum(z, 0.0)
    return np.concatenate([np.stack([xx, yy, z], 1), np.stack([xx, yy, -z], 1)]).astype(np.float32)
