"""The ``mesh`` op: coloured points -> a watertight coloured triangle mesh (backend/model/meshing.py).

Why a wire op: Blender's Python has numpy but not scipy or PyMCubes, and Blender's own Geometry
Nodes route (Points to Volume) gives a double-walled shell (bench/bench_mesh.py), so the add-on's
"Make Mesh" sends the cloud here, in whatever frame it likes (``up`` names its vertical axis).

params: voxel (0 = auto), detail, target_faces, smooth, fill_holes, close_bottom, up.
blobs in: xyz (N,3) <f4, rgb (N,3) |u1 (optional). out: vertices <f4 (V,3), faces <i4 (F,3),
colors |u1 (V,3), meta with the counts, voxel and seconds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from image2points.addon.core.limits import MAX_POINTS

from .ops import Job, JobError, Output, register_op

_INT = {"detail", "target_faces", "smooth", "fill_holes", "up"}


def params_from(raw: dict[str, Any]) -> Any:
    """MeshParams from job params; JobError BAD_INPUT naming a wrong one."""
    from .model.meshing import MeshParams, check_params

    p = MeshParams()
    for key, value in raw.items():
        if key not in MeshParams.__dataclass_fields__:
            continue  # forward compatible: an unknown control is ignored
        if key == "close_bottom":
            if not isinstance(value, bool):
                raise JobError("BAD_INPUT", "close_bottom must be true or false")
        elif key in _INT:
            if not isinstance(value, int) or isinstance(value, bool):
                raise JobError("BAD_INPUT", f"{key} must be an integer")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise JobError("BAD_INPUT", f"{key} must be a number")
        setattr(p, key, float(value) if key == "voxel" else value)
    try:
        check_params(p)
    except ValueError as exc:
        raise JobError("BAD_INPUT", str(exc)) from None
    return p


@register_op("mesh")
def mesh(job: Job) -> Output:
    xyz = job.blobs.get("xyz")
    rgb = job.blobs.get("rgb")
    if not isinstance(xyz, np.ndarray) or xyz.dtype != np.float32 or xyz.ndim != 2 or xyz.shape[1] != 3:
        raise JobError("BAD_INPUT", "mesh needs a float32 (N,3) blob named 'xyz'")
    if rgb is not None and (not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8
                            or rgb.shape != xyz.shape):
        raise JobError("BAD_INPUT", "blob 'rgb' must be uint8 (N,3), one colour per point")
    if len(xyz) > MAX_POINTS:
        raise JobError("TOO_LARGE", f"{len(xyz)} points exceed the mesh limit {MAX_POINTS}")
    p = params_from(job.params)
    from .model import meshing

    job.progress(0.1, "meshing")
    t0 = time.perf_counter()
    try:
        m = meshing.mesh_points(xyz, rgb, p)
    except ImportError as exc:  # scipy / PyMCubes are the mesh extra's; a bare backend lacks them
        raise JobError("MODEL", f"meshing is unavailable on this backend ({exc}); "
                       "pip install scipy PyMCubes trimesh") from None
    except ValueError as exc:
        raise JobError("BAD_INPUT", str(exc)) from None
    except MemoryError:
        raise JobError("OOM", "out of memory while meshing: raise the voxel size") from None
    job.check_cancel()
    meta = {**m.info, "seconds": round(time.perf_counter() - t0, 4),
            "watertight": meshing.is_watertight(m.faces)}
    return Output(meta, {"vertices": m.vertices, "faces": m.faces, "colors": m.colors})
