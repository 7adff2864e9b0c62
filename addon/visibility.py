"""Seeing the result: scene bounds for placement, framing it in the viewports, and renders of
the result alone (everything else that renders is hidden for the render and restored after)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bpy
import numpy as np

from .core.placement import Box

# Object types that put something in a render (lights, cameras and plain empties do not).
RENDERABLE = {"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD", "VOLUME",
              "GPENCIL", "GREASEPENCIL"}


def renders_something(obj: Any) -> bool:
    if obj.type in RENDERABLE:
        return True
    return obj.type == "EMPTY" and getattr(obj, "instance_type", "NONE") == "COLLECTION" \
        and obj.instance_collection is not None


def world_box(obj: Any) -> Box:
    m = np.array(obj.matrix_world, dtype=np.float64)
    corners = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
    return corners.min(0), corners.max(0)


def visible_boxes(context: Any, exclude: Any = None) -> list[Box]:
    """World bounds of every visible object that renders something (instancing empties are
    counted at their own bounds, a small box: good enough to avoid the common case)."""
    view_layer = getattr(context, "view_layer", None)
    objs = view_layer.objects if view_layer is not None else context.scene.objects
    boxes = []
    for obj in objs:
        if obj is exclude or not renders_something(obj):
            continue
        try:
            if not obj.visible_get():
                continue
        except RuntimeError:  # not in this view layer
            continue
        boxes.append(world_box(obj))
    return boxes


def frame_in_viewports(context: Any) -> int:
    """View Selected in every 3D Viewport of the current window; the number framed (0 where
    there is no window, e.g. ``blender -b``, which is harmless)."""
    window = getattr(context, "window", None)
    screen = getattr(window, "screen", None) if window is not None else None
    if screen is None:
        return 0
    framed = 0
    for area in screen.areas:
        if area.type != "VIEW_3D":
            continue
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        if region is None:
            continue
        try:
            with context.temp_override(window=window, area=area, region=region):
                bpy.ops.view3d.view_selected(use_all_regions=False)
            framed += 1
        except (RuntimeError, TypeError):
            pass  # a viewport that cannot frame right now: the selection is still right
    return framed


@contextmanager
def only_renderable(scene: Any, keep: Any) -> Iterator[None]:
    """Hide every other renderable object for the duration (e.g. the default Cube, other clouds),
    and give each its own hide_render back afterwards, also when the render fails."""
    saved = [(o, o.hide_render) for o in scene.objects if o is not keep and renders_something(o)]
    try:
        for obj, _ in saved:
            obj.hide_render = True
        yield
    finally:
        for obj, value in saved:
            try:
                obj.hide_render = value
            except ReferenceError:  # removed meanwhile
                pass
