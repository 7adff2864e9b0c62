"""The backend's PLY files, through ``plyfile``: coloured points as binary little-endian
x,y,z float32 + red,green,blue uint8 (the layout ``addon/core/plyio.py`` reads inside Blender,
which has no plyfile).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
from plyfile import PlyData, PlyElement

from image2points.addon.core.plyio import vertices


def write_ply(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray,
              comment: str = "Image2Points") -> None:
    """Write points atomically: a failed write leaves neither a half file nor a ``.part``."""
    ply = PlyData([PlyElement.describe(vertices(xyz, rgb), "vertex")], text=False, byte_order="<",
                  comments=[comment])
    tmp = f"{os.fspath(path)}.part"
    try:
        ply.write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def read_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 (N, 3), rgb uint8 (N, 3)) of any PLY with those vertex properties."""
    v = PlyData.read(os.fspath(path))["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.uint8)
    return xyz, rgb
