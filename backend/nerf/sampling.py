"""Sample positions along rays.

Two strategies, both returning (t, delta) with t sorted per ray:
- ``stratified``: n bins between per-ray [near, far], one sample per bin, uniformly jittered
  inside its bin when training (the seed's scheme); deterministic bin centres at evaluation.
- ``fixed_step``: samples every ``step`` world units from the box entry (one random offset per ray
  when training); a mask marks samples beyond the exit. Grid fields use it so that the sample
  spacing follows the voxel size, not the ray length.
"""

from __future__ import annotations

import torch


def stratified(near: torch.Tensor, far: torch.Tensor, n: int, jitter: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R,) near/far -> t (R, n) and deltas (R, n) summing to far - near per ray."""
    edges = torch.linspace(0.0, 1.0, n + 1, device=near.device, dtype=near.dtype)
    lo, width = edges[:-1], 1.0 / n
    if jitter:
        u = torch.rand((near.shape[0], n), device=near.device, dtype=near.dtype, generator=generator)
    else:
        u = torch.full((near.shape[0], n), 0.5, device=near.device, dtype=near.dtype)
    frac = lo + u * width
    span = (far - near).unsqueeze(-1)
    t = near.unsqueeze(-1) + frac * span
    return t, deltas_from_t(t, far)


def deltas_from_t(t: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Distance from each sample to the next; the last one extends to ``far`` (not to infinity:
    with box-bounded sampling, what is behind the box is the background, not the last sample)."""
    d = torch.diff(t, dim=-1, append=far.unsqueeze(-1).expand(-1, 1) if far.dim() == 1 else far)
    return d.clamp_min(0.0)


def fixed_step(near: torch.Tensor, far: torch.Tensor, step: float, max_samples: int, jitter: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """t (R, S), deltas (R, S) and a validity mask (R, S) for samples every ``step`` from ``near``."""
    r = near.shape[0]
    off = (torch.rand((r, 1), device=near.device, generator=generator) if jitter
           else torch.full((r, 1), 0.5, device=near.device))
    k = torch.arange(max_samples, device=near.device, dtype=near.dtype)
    t = near.unsqueeze(-1) + (k + off) * step
    valid = t < far.unsqueeze(-1)
    delta = torch.full_like(t, step)
    return t, delta, valid
