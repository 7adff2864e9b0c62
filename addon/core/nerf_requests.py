"""Requests for the backend's NeRF ops, and reading their results: the only place that knows
their parameter names. No bpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from .nerf_capture import DatasetError, Intrinsics
from .transforms import Dataset


def _camera_params(intr: Intrinsics) -> dict[str, Any]:
    return {"camera_angle_x": intr.angle_x, "fl_x": intr.fl_x, "fl_y": intr.fl_y,
            "cx": intr.cx, "cy": intr.cy, "w": intr.w, "h": intr.h}


def fit_request(ds: Dataset, field: str = "fast", minutes: float = 0.0, steps: int = 0,
                read: Any = None) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
    """op "nerf_fit": (params, blobs, media). Images travel as bytes (the server opens no paths):
    blob ``image_i`` belongs to ``transform_matrices[i]``. Names as in backend/nerf/ops.py."""
    def _read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    reader = read or _read
    params: dict[str, Any] = {"field": field, **_camera_params(ds.intrinsics),
                              "transform_matrices": [np.asarray(m, np.float64).tolist()
                                                     for _, m in ds.frames]}
    if minutes > 0:
        params["minutes"] = float(minutes)
    if steps > 0:
        params["steps"] = int(steps)
    if ds.aabb is not None:
        params["aabb"] = ds.aabb.tolist()
    blobs: dict[str, bytes] = {}
    media: dict[str, str] = {}
    for i, (path, _m) in enumerate(ds.frames):
        data = reader(path)
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            raise DatasetError(f"{path} is not a PNG (the NeRF backend takes PNG frames)")
        blobs[f"image_{i}"] = data
        media[f"image_{i}"] = "image/png"
    return params, blobs, media


def render_request(model_id: str, poses: list[np.ndarray], intr: Intrinsics) -> dict[str, Any]:
    """op "nerf_render" params: one image per pose, all with these intrinsics."""
    return {"model_id": model_id, **_camera_params(intr),
            "transform_matrices": [np.asarray(m, np.float64).tolist() for m in poses]}


def points_request(model_id: str, max_points: int) -> dict[str, Any]:
    """op "nerf_points" params; the answer is xyz float32 (N, 3) + rgb uint8 (N, 3) in Blender
    world coordinates."""
    return {"model_id": model_id, "max_points": int(max_points)}


def model_id_of(meta: dict[str, Any]) -> str:
    return str(meta.get("model_id") or "")


def is_world_frame(frame: str) -> bool:
    """nerf_points answers in the cameras' frame: "world (as the cameras), Z up, ..." (or
    "blender-world"); our cameras are Blender's, so that is Blender world."""
    return frame == "blender-world" or frame.startswith("world")


def result_images(blobs: dict[str, Any]) -> list[Any]:
    """A render result's image blobs in camera order ("image", or "image_0", "image_1", ...)."""
    numbered = sorted((int(k.split("_", 1)[1]), k) for k in blobs
                      if k.startswith("image_") and k.split("_", 1)[1].isdigit())
    if numbered:
        return [blobs[k] for _, k in numbered]
    return [blobs["image"]] if "image" in blobs else []
