"""Where a new result goes so that it is seen on the first click (pure numpy, no bpy).

Rule: at the 3D cursor when the new object's box (a cube ``size`` across, centred there) overlaps
no visible object's world bounds; otherwise beside everything, along +X: just past the scene's
largest x plus a gap of a quarter of ``size``, at the cursor's y and z. So the default Cube (2 m at
the origin) never swallows a 2 m result, and an empty scene keeps the artist's cursor placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

Box = tuple[Any, Any]  # (min xyz, max xyz) as sequences or arrays, world space


def overlaps(a: Box, b: Box) -> bool:
    """Axis-aligned boxes that share volume (touching faces do not count)."""
    return bool(np.all(np.asarray(a[0]) < np.asarray(b[1]))
                and np.all(np.asarray(b[0]) < np.asarray(a[1])))


def clear_location(cursor: Sequence[float], size: float, boxes: Iterable[Box]) -> tuple[float, float, float]:
    """The cursor when the new object's box is free there, else beside the scene along +X."""
    c = np.asarray(cursor, dtype=np.float64)
    half = max(float(size), 1e-6) / 2
    mine: Box = (c - half, c + half)
    boxes = list(boxes)
    if not any(overlaps(mine, b) for b in boxes):
        return float(c[0]), float(c[1]), float(c[2])
    right = max(float(np.asarray(b[1])[0]) for b in boxes)
    return right + 0.25 * float(size) + half, float(c[1]), float(c[2])
