"""A ``mesh`` job's result, checked (bpy-free, like ``client.points_from_result``): tests and
scripts use it without Blender."""

from __future__ import annotations

from typing import Any

import numpy as np

from .client import BackendError, JobResult
from .protocol import Message, ProtocolError, require_array


def mesh_from_result(res: JobResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(vertices (V,3) float32, faces (F,3) int32, colours (V,3) uint8 sRGB, meta)."""
    msg = Message(res.header, res.blobs)
    try:
        v = require_array(msg, "vertices", "<f4", (None, 3))
        f = require_array(msg, "faces", "<i4", (None, 3))
        c = require_array(msg, "colors", "|u1", (v.shape[0], 3))
    except ProtocolError as exc:
        raise BackendError(exc.code, f"malformed mesh result: {exc.message}", res.job) from None
    if len(f) == 0 or f.min() < 0 or f.max() >= len(v) or not np.isfinite(v).all():
        raise BackendError("MODEL", "the backend returned an empty or broken mesh", res.job)
    return v, f, c, dict(res.meta)
