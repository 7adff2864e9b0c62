"""Camera rays from c2w poses and pinhole intrinsics (OpenGL/Blender camera, looks down -Z).

Why a module of its own: ray generation is where conventions go wrong (pixel centres, the image
y axis pointing down while camera +Y points up), so it is tested against Blender's projection.
"""

from __future__ import annotations

import torch

from image2points.addon.core.nerf_capture import Intrinsics


def pixel_grid(intr: Intrinsics, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (u right, v down), each (H, W): u = i + 0.5, v = j + 0.5."""
    v, u = torch.meshgrid(torch.arange(intr.h, dtype=torch.float32, device=device) + 0.5,
                          torch.arange(intr.w, dtype=torch.float32, device=device) + 0.5, indexing="ij")
    return u, v


def rays_through_pixels(c2w: torch.Tensor, intr: Intrinsics, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through continuous pixel coordinates (u, v) (top-left corner of the image = (0, 0)).

    ``c2w`` is (4,4)/(3,4) or batched (..., 4, 4) broadcastable with u/v. Returns origins and
    unit directions, both (..., 3), so a ray parameter t is a distance in world units.
    """
    x = (u - intr.cx) / intr.fl_x
    y = -(v - intr.cy) / intr.fl_y
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    rot = c2w[..., :3, :3]
    d = (d_cam.unsqueeze(-2) * rot).sum(-1) if rot.dim() > 2 else d_cam @ rot.T
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., :3, 3]
    o = o.expand_as(d) if rot.dim() == 2 else torch.broadcast_to(o, d.shape)
    return o.contiguous(), d


def camera_rays(c2w: torch.Tensor, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixel-centre rays of one camera, each (H, W, 3)."""
    u, v = pixel_grid(intr, c2w.device)
    return rays_through_pixels(c2w.to(torch.float32), intr, u, v)


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor, near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test: entry/exit distances of rays with the box; ``hit`` is False where they miss.

    Entry is clamped to ``near`` (cameras inside the box start at the camera).
    """
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    inv = 1.0 / safe
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    tmin = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    tmax = torch.maximum(t0, t1).amin(-1)
    hit = tmax > tmin
    return tmin, torch.where(hit, tmax, tmin), hit
