"""Volume rendering: densities along rays -> weights, colour, opacity, depth, background.

alpha_i = 1 - exp(-sigma_i delta_i), T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i,
C = sum w_i c_i + (1 - sum w_i) * background, depth = sum w_i t_i (expected termination distance,
unnormalised: a ray that hits nothing has depth ~0 and opacity ~0). ``render_rays`` renders a
batch of rays through a field, ``render_image`` a whole camera in chunks (cancellable).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from image2points.addon.core.nerf_capture import Intrinsics

from .rays import camera_rays, ray_aabb
from .sampling import fixed_step, stratified

WHITE = (1.0, 1.0, 1.0)  # evaluation and rendering background


class Cancelled(Exception):
    """Raised by ``render_image``/``extract_points`` when their ``should_stop()`` says so."""


def volume_weights(sigma: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, S) densities and spacings -> weights, transmittance (before each sample), alpha."""
    sd = sigma * delta
    alpha = 1.0 - torch.exp(-sd)
    # exclusive cumulative sum of optical depth: numerically safer than cumprod of (1 - alpha)
    tau = torch.cumsum(sd, dim=-1)
    trans = torch.exp(-torch.cat([torch.zeros_like(tau[..., :1]), tau[..., :-1]], dim=-1))
    return trans * alpha, trans, alpha


def composite(weights: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
              background: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
    """Weights (R,S), colours (R,S,3), distances (R,S) -> rgb (R,3), acc (R,), depth (R,)."""
    acc = weights.sum(-1)
    out_rgb = (weights.unsqueeze(-1) * rgb).sum(-2)
    depth = (weights * t).sum(-1)
    if background is not None:
        out_rgb = out_rgb + (1.0 - acc).unsqueeze(-1) * background
    return {"rgb": out_rgb, "acc": acc, "depth": depth}


def median_depth(weights: torch.Tensor, t: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Distance where the accumulated weight first reaches ``level`` (sharper than the mean at
    silhouettes; used for point extraction). Rays that never reach it get +inf."""
    cum = torch.cumsum(weights, dim=-1)
    idx = torch.searchsorted(cum, torch.full_like(cum[..., :1], level)).clamp_max(t.shape[-1] - 1)
    d = torch.gather(t, -1, idx).squeeze(-1)
    return torch.where(cum[..., -1] >= level, d, torch.full_like(d, float("inf")))


def render_rays(field, origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor | float,
                jitter: bool = False, generator: torch.Generator | None = None,
                keep_samples: bool = False) -> dict[str, torch.Tensor]:
    """Render rays (R,3) through ``field`` with the sampler it asks for.

    Box-bounded sampling: rays that miss the scene box see only the background. Samples where
    the field's occupancy grid says "empty" are never evaluated (density 0 there).
    """
    r = origins.shape[0]
    if field.bounds == "near_far":
        near = torch.full((r,), field.near, device=origins.device)
        far = torch.full((r,), field.far, device=origins.device)
        hit = torch.ones(r, dtype=torch.bool, device=origins.device)
    else:
        near, far, hit = ray_aabb(origins, dirs, field.aabb)
    if field.sampling == "fixed_step":
        ext = field.aabb[1] - field.aabb[0]
        max_s = int(math.ceil(float(ext.norm()) / field.step)) + 1
        t, delta, valid = fixed_step(near, far, field.step, max_s, jitter, generator)
    else:
        t, delta = stratified(near, far, field.n_samples, jitter, generator)
        valid = torch.ones_like(t, dtype=torch.bool)
    valid = valid & hit.unsqueeze(-1)
    # trim trailing samples no ray needs (short rays through the box)
    last = int(valid.any(0).nonzero().max()) + 1 if bool(valid.any()) else 1
    t, delta, valid = t[:, :last], delta[:, :last], valid[:, :last]
    xyz = origins.unsqueeze(1) + dirs.unsqueeze(1) * t.unsqueeze(-1)
    pts = xyz[valid]
    occ = field.occupied(pts)
    if occ is not None:
        sub = valid.clone()
        sub[valid] = occ
        valid, pts = sub, pts[occ]
    d = dirs.unsqueeze(1).expand_as(xyz)[valid]
    if pts.shape[0] > 0:
        s_p, c_p = field(pts, d)
    else:
        s_p = torch.zeros(0, device=origins.device)
        c_p = torch.zeros(0, 3, device=origins.device)
    sigma = torch.zeros(valid.shape, device=origins.device, dtype=s_p.dtype).masked_scatter(valid, s_p)
    rgb = torch.zeros(*valid.shape, 3, device=origins.device, dtype=c_p.dtype).masked_scatter(valid.unsqueeze(-1), c_p)
    weights, _, _ = volume_weights(sigma, delta)
    out = composite(weights, rgb, t, background)
    out["n_samples"] = torch.tensor(float(pts.shape[0]))
    if keep_samples:
        out["weights"], out["t"] = weights, t
    return out


@torch.no_grad()
def render_image(field, c2w: np.ndarray | torch.Tensor, intr: Intrinsics,
                 background: tuple[float, float, float] = WHITE, chunk: int = 8192,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
    """Render one camera: rgb (H,W,3) float in [0,1] on ``background``, acc (H,W), depth (H,W).

    ``should_stop()`` is checked before every chunk of rays; when true, ``Cancelled`` is raised."""
    dev = field.aabb.device
    o, d = camera_rays(torch.as_tensor(np.asarray(c2w), dtype=torch.float32, device=dev), intr)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    bg = torch.tensor(background, dtype=torch.float32, device=dev)
    outs: dict[str, list] = {"rgb": [], "acc": [], "depth": []}
    for i in range(0, o.shape[0], chunk):
        if should_stop is not None and should_stop():
            raise Cancelled("rendering cancelled")
        r = render_rays(field, o[i:i + chunk], d[i:i + chunk], bg)
        for k in outs:
            outs[k].append(r[k])
    h, w = intr.h, intr.w
    return {"rgb": torch.cat(outs["rgb"]).reshape(h, w, 3).clamp(0, 1).cpu().numpy(),
            "acc": torch.cat(outs["acc"]).reshape(h, w).cpu().numpy(),
            "depth": torch.cat(outs["depth"]).reshape(h, w).cpu().numpy()}


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
