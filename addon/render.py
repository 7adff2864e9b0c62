"""Novel views of a point object: a ring of cameras around it, rendered to PNG files."""

from __future__ import annotations

import os
from typing import Any

import bpy
import numpy as np

from . import cameras

RIG_COLLECTION = "Image2Points Views"


def configure_render(scene: Any, engine: str = "CYCLES", samples: int = 16,
                     resolution: int = 256) -> None:
    """Cheap, deterministic defaults: Cycles on the CPU, few samples, no denoiser."""
    scene.render.engine = engine
    scene.render.resolution_x = scene.render.resolution_y = int(resolution)
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.film_transparent = False
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(samples)
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
    elif engine == "BLENDER_EEVEE_NEXT":
        scene.eevee.taa_render_samples = int(samples)


def ensure_lighting(scene: Any) -> None:
    """A soft grey world (and a sun) if the scene has no light yet, so points read clearly."""
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Image2Points World")
    world = scene.world
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    if bg is not None:
        bg.inputs["Color"].default_value = (0.62, 0.62, 0.65, 1.0)
        bg.inputs["Strength"].default_value = 1.0
    if not any(o.type == "LIGHT" for o in scene.objects):
        sun: Any = bpy.data.lights.new("Image2Points Sun", "SUN")
        sun.energy = 2.0
        obj = bpy.data.objects.new("Image2Points Sun", sun)
        obj.rotation_euler = (0.7, 0.2, 0.5)
        scene.collection.objects.link(obj)


def object_bounds(obj: bpy.types.Object) -> tuple[np.ndarray, float]:
    """World-space centre and radius of the evaluated object's bounding box."""
    corners = np.array([obj.matrix_world @ _vec(c) for c in obj.bound_box], dtype=np.float64)
    centre = 0.5 * (corners.min(0) + corners.max(0))
    radius = float(np.linalg.norm(corners - centre, axis=1).max())
    return centre, max(radius, 1e-3)


def _vec(c: Any) -> Any:
    from mathutils import Vector

    return Vector(c)


def render_ring(obj: bpy.types.Object, out_dir: str, prefix: str, count: int = 4,
                elevation_deg: float = 20.0, lens_mm: float = 50.0) -> list[str]:
    """Add ``count`` cameras around ``obj`` (in their own collection) and render each to PNG."""
    scene: Any = bpy.context.scene
    coll = bpy.data.collections.get(RIG_COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(RIG_COLLECTION)
        scene.collection.children.link(coll)
    centre, radius = object_bounds(obj)
    dist = cameras.fit_radius(radius, lens_mm=lens_mm)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, c2w in enumerate(cameras.ring_poses(count, dist, elevation_deg, centre)):
        cam = cameras.add_camera(f"{prefix} view {i:02d}", c2w, lens_mm, collection=coll)
        cam.data.clip_end = max(100.0, 4 * dist)
        scene.camera = cam
        path = os.path.join(out_dir, f"{prefix}_view_{i:02d}.png")
        scene.render.filepath = path
        bpy.ops.render.render(write_still=True)
        paths.append(path)
    return paths
