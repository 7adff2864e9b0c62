"""An asset preview rendered from the input image's direction (the object's local -Y, where the
input camera was), so the Asset Browser thumbnail shows the side the artist photographed.

Why not ``asset_generate_preview()``: it needs a window (nothing happens in background mode or
the bpy module) and picks its own angle. Here: one small Cycles CPU render of the object alone,
written straight into the ID's preview with ``foreach_set``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
import numpy as np

from . import render
from .core import camera

PREVIEW_PX = 128


def input_view_pose(obj: Any) -> np.ndarray:
    """Camera-to-world pose framing ``obj`` from its input direction, slightly from above."""
    centre, radius = render.object_bounds(obj)
    rot = np.array(obj.matrix_world.to_3x3().normalized(), dtype=np.float64)
    front = rot @ np.array([0.0, -1.0, 0.15])
    front /= np.linalg.norm(front)
    dist = camera.fit_radius(radius, lens_mm=50.0)
    return camera.look_at(centre + dist * front, centre, up=rot @ np.array([0.0, 0.0, 1.0]))


def render_preview(context: Any, obj: Any, size: int = PREVIEW_PX, samples: int = 8) -> np.ndarray:
    """(size, size, 4) float RGBA, bottom row first (Blender's pixel order), of ``obj`` alone."""
    from .views import scene_render_restored

    scene = context.scene
    path = os.path.join(tempfile.mkdtemp(prefix="i2p-preview-"), "preview.png")
    cam = render.add_camera(f"{obj.name} preview", input_view_pose(obj), 50.0,
                             collection=scene.collection)
    try:
        with scene_render_restored(scene):
            render.configure_render(scene, "CYCLES", samples, size)
            scene.render.film_transparent = True
            if scene.world is None:
                render.ensure_lighting(scene)
            for other in scene.objects:
                if other is not obj and other.type not in {"LIGHT", "CAMERA"}:
                    other.hide_render = True
            scene.camera = cam
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
        img: Any = bpy.data.images.load(path, check_existing=False)
        try:
            px = np.empty(size * size * 4, np.float32)
            img.pixels.foreach_get(px)
        finally:
            bpy.data.images.remove(img)
    finally:
        cam_data = cam.data
        bpy.data.objects.remove(cam, do_unlink=True)
        bpy.data.cameras.remove(cam_data)
        if os.path.exists(path):
            os.remove(path)
    return px.reshape(size, size, 4)


def set_preview(context: Any, obj: Any, size: int = PREVIEW_PX) -> bool:
    """Render and store the preview; False (preview left as it was) when rendering fails."""
    try:
        px = render_preview(context, obj, size)
    except (RuntimeError, OSError):
        return False
    prev = obj.preview_ensure()
    prev.image_size = (size, size)
    prev.image_pixels_float.foreach_set(px.ravel())
    return True
