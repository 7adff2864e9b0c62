"""Coloured point clouds from a fitted field (written as PLY by ``backend/ply.py``).

Why surface points from rays rather than thresholded voxels: a NeRF's density inside solid
objects and its colour there are arbitrary (never seen by any camera). Rendering the training
cameras and back-projecting each opaque pixel at its *median* termination depth gives points on
visible surfaces with the colour the model actually shows; the median (not the mean) depth keeps
silhouette pixels from landing half-way between foreground and background.

Why the rays are capped: extraction renders, at ~60k rays/s on one CPU thread (measured: 40
views of 64 x 64 in 2.6 s), so all 100 800 x 800 training views of a NeRF-synthetic scene (64 M
rays) would take ~17 min and the add-on's largest fit (400 views of 2048 x 2048) hours, while the
surface is densely sampled long before: points are deduplicated on a 512^3 grid over the box. So
at most ``MAX_POINT_VIEWS`` cameras (evenly spread over the list) are used, at a resolution
lowered so that together they cast at most ``MAX_POINT_RAYS`` rays (~1 min on one CPU thread,
seconds on a GPU); a cloud has at most that many points before deduplication.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from image2points.addon.core.nerf_capture import Intrinsics

from .rays import camera_rays
from .rendering import Cancelled, median_depth, render_rays
from .training import NerfModel, intrinsics_from_meta

MAX_POINT_RAYS = 2**22  # ~4.2 M rays in all (see the module docstring)
MAX_POINT_VIEWS = 64


def point_cameras(cameras: np.ndarray, intrinsics: Intrinsics, max_rays: int = MAX_POINT_RAYS,
                  max_views: int = MAX_POINT_VIEWS) -> tuple[np.ndarray, Intrinsics]:
    """The cameras and resolution points are extracted with: all of them at full resolution when
    that is at most ``max_rays`` rays, else at most ``max_views`` cameras evenly spread over
    ``cameras`` at a resolution lowered (same field of view) to ``max_rays`` rays in all."""
    cameras = np.asarray(cameras)
    w, h = intrinsics.w, intrinsics.h
    if len(cameras) * w * h <= max_rays:
        return cameras, intrinsics
    k = max(1, min(len(cameras), int(max_views), int(max_rays)))
    if k < len(cameras):
        cameras = cameras[np.unique(np.linspace(0, len(cameras) - 1, k).round().astype(np.int64))]
    if len(cameras) * w * h > max_rays:
        s = math.sqrt(max_rays / (len(cameras) * w * h))
        intrinsics = intrinsics.scaled(max(1, int(w * s)), max(1, int(h * s)))
    return cameras, intrinsics


@torch.no_grad()
def extract_points(model: NerfModel, max_points: int = 200_000, acc_threshold: float = 0.95,
                   cameras: np.ndarray | None = None, intrinsics: Intrinsics | None = None,
                   seed: int = 0, chunk: int = 8192, max_rays: int = MAX_POINT_RAYS,
                   should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """xyz float32 (N,3) in the scene's world frame (Blender world, Z up, scene units) and rgb
    uint8 (N,3). Uses the training cameras stored in the model unless ``cameras`` are given,
    thinned to ``max_rays`` rays by ``point_cameras``. ``should_stop()`` is checked before every
    chunk of rays; when true, ``rendering.Cancelled`` is raised."""
    field = model.field
    dev = field.aabb.device
    if cameras is None:
        cameras = np.asarray(model.meta.get("train_c2w", []), dtype=np.float32)
    if intrinsics is None:
        intrinsics = intrinsics_from_meta(model.meta["intrinsics"])
    if len(cameras) == 0:
        raise ValueError("no cameras to extract points from")
    cameras, intrinsics = point_cameras(cameras, intrinsics, max_rays)
    # one point per voxel-ish cell: deduplicate on a grid finer than the field's own
    cell = float((field.aabb[1] - field.aabb[0]).max()) / 512.0
    xyz_all, rgb_all = [], []
    white = torch.ones(3, device=dev)
    for c2w in cameras:
        o, d = camera_rays(torch.as_tensor(c2w, dtype=torch.float32, device=dev), intrinsics)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        for i in range(0, o.shape[0], chunk):
            if should_stop is not None and should_stop():
                raise Cancelled("point extraction cancelled")
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
