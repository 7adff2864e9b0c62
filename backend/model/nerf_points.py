"""Coloured point clouds from a fitted field (written as PLY by ``addon.plyio``).

Why surface points from rays rather than thresholded voxels: a NeRF's density inside solid
objects and its colour there are arbitrary (never seen by any camera). Rendering the training
cameras and back-projecting each opaque pixel at its *median* termination depth gives points on
visible surfaces with the colour the model actually shows; the median (not the mean) depth keeps
silhouette pixels from landing half-way between foreground and background.
"""

from __future__ import annotations

import numpy as np
import torch

from .nerf_data import Intrinsics
from .nerf_rays import camera_rays
from .nerf_render import median_depth, render_rays
from .nerf_train import NerfModel


@torch.no_grad()
def extract_points(model: NerfModel, max_points: int = 200_000, acc_threshold: float = 0.95,
                   cameras: np.ndarray | None = None, intrinsics: Intrinsics | None = None,
                   seed: int = 0, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """xyz float32 (N,3) in the scene's world frame (Blender world, Z up, scene units) and rgb
    uint8 (N,3). Uses the training cameras stored in the model unless ``cameras`` are given."""
    field = model.field
    dev = field.aabb.device
    if cameras is None:
        cameras = np.asarray(model.meta.get("train_c2w", []), dtype=np.float32)
    if intrinsics is None:
        intrinsics = Intrinsics(**model.meta["intrinsics"])
    if len(cameras) == 0:
        raise ValueError("no cameras to extract points from")
    # one point per voxel-ish cell: deduplicate on a grid finer than the field's own
    cell = float((field.aabb[1] - field.aabb[0]).max()) / 512.0
    xyz_all, rgb_all = [], []
    white = torch.ones(3, device=dev)
    for c2w in cameras:
        o, d = camera_rays(torch.as_tensor(c2w, dtype=torch.float32, device=dev), intrinsics)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        for i in range(0, o.shape[0], chunk):
            oo, dd = o[i:i + chunk], d[i:i + chunk]
            r = render_rays(field, oo, dd, white, keep_samples=True)
            acc = r["acc"]
            w = r["weights"]
            # colour without the background: normalise by the accumulated weight
            col = (r["rgb"] - (1.0 - acc).unsqueeze(-1) * white) / acc.clamp_min(1e-6).unsqueeze(-1)
            depth = median_depth(w, r["t"])
            ok = (acc > acc_threshold) & torch.isfinite(depth)
            if bool(ok.any()):
                xyz_all.append((oo[ok] + dd[ok] * depth[ok].unsqueeze(-1)).cpu())
                rgb_all.append(col[ok].clamp(0, 1).cpu())
    if not xyz_all:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    xyz: np.ndarray = torch.cat(xyz_all).numpy()
    rgb: np.ndarray = torch.cat(rgb_all).numpy()
    keys = np.floor((xyz - field.aabb[0].cpu().numpy()) / cell).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    xyz, rgb = xyz[first], rgb[first]
    if len(xyz) > max_points:
        pick = np.random.default_rng(seed).choice(len(xyz), max_points, replace=False)
        pick.sort()
        xyz, rgb = xyz[pick], rgb[pick]
    return xyz.astype(np.float32), (rgb * 255.0 + 0.5).astype(np.uint8)
