"""Binary PLY for coloured points (float x,y,z + uchar red,green,blue), in a few lines of numpy.

Pure numpy because Blender ships no plyfile; the backend writes the same layout through plyfile
(backend/ply.py, cross-read in tests/test_plyio.py).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def vertices(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(N,3) points + (N,3) sRGB bytes -> the PLY vertex records (x, y, z float32; red, green,
    blue uint8), the layout every writer here uses."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(xyz) != len(rgb):
        raise ValueError(f"{len(xyz)} points but {len(rgb)} colours")
    v = np.empty(len(xyz), _VERTEX)
    v["x"], v["y"], v["z"] = xyz.T
    v["red"], v["green"], v["blue"] = rgb.T
    return v


def write_ply(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray,
              comment: str = "Image2Points") -> None:
    v = vertices(xyz, rgb)
    head = (f"ply\nformat binary_little_endian 1.0\ncomment {comment}\n"
            f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    tmp = f"{os.fspath(path)}.part"
    try:
        with open(tmp, "wb") as f:
            f.write(head.encode("ascii"))
            f.write(v.tobytes())
        os.replace(tmp, path)  # never leave a half-written file under the real name
    except BaseException:
        with contextlib.suppress(OSError):  # nor a stray .part (disk full, path is a folder)
            os.remove(tmp)
        raise


def read_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads what write_ply writes (used by tests and by importers of our own files)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    head = data[:end].decode("ascii").splitlines()
    if head[1] != "format binary_little_endian 1.0":
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    n = next(int(line.split()[2]) for line in head if line.startswith("element vertex"))
    v = np.frombuffer(data, _VERTEX, count=n, offset=end)
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1)
    return xyz, rgb
