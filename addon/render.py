"""Novel views of a point object: a ring of cameras around it, rendered to PNG files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import bpy
import numpy as np

from .core import camera

RIG_COLLECTION = "Image2Points Views"


def add_camera(name: str, c2w: np.ndarray, lens_mm: float = 50.0, collection: Any = None) -> Any:
    from mathutils import Matrix

    cam = bpy.data.cameras.new(name)
    cam.lens = lens_mm
    cam.sensor_fit = "HORIZONTAL"
    obj = bpy.data.objects.new(name, cam)
    obj.matrix_world = Matrix([list(map(float, row)) for row in c2w])
    (collection or cast(Any, bpy.context.scene).collection).objects.link(obj)
    return obj


def configure_render(scene: Any, engine: str = "CYCLES", samples: int = 16,
                     resolution: int = 256) -> None:
    """Cheap, deterministic defaults: Cycles on the CPU, few samples, no denoiser."""
    scene.render.engine = engine
    scene.render.resolution_x = scene.render.resolution_y = int(resolution)
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.film_transparent = False
    standard_colour(scene)
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(samples)
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
    elif engine == "BLENDER_EEVEE_NEXT":
        scene.eevee.taa_render_samples = int(samples)


def standard_colour(scene: Any) -> None:
    """Standard view transform, no look, neutral exposure: an emission of sRGB colour c renders
    as the bytes c, so the view from the input's direction shows the input's colours (AgX and
    Filmic would wash them out)."""
    vs = scene.view_settings
    vs.view_transform = "Standard"
    vs.look = "None"
    vs.exposure = 0.0
    vs.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    scene.sequencer_colorspace_settings.name = "sRGB"


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Blender's own per-tile/per-sample progress goes to the C stdout: silence fd 1 for the
    duration (Python prints, flushed first, still show outside the block)."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    fd = 1  # the process's stdout, where Blender's C code writes, whatever sys.stdout is
    try:
        saved = os.dup(fd)
    except OSError:  # no stdout at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()
        os.dup2(saved, fd)
        os.close(saved)


@contextmanager
def colour_restored(scene: Any) -> Iterator[None]:
    """Put the scene's colour management back as it was after our views."""
    vs, ds = scene.view_settings, scene.display_settings
    saved = (vs.view_transform, vs.look, vs.exposure, vs.gamma, ds.display_device,
             scene.sequencer_colorspace_settings.name)
    try:
        yield
    finally:
        ds.display_device = saved[4]
        vs.view_transform, vs.look, vs.exposure, vs.gamma = saved[:4]
        scene.sequencer_colorspace_settings.name = saved[5]


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


def cloud_points(obj: bpy.types.Object, limit: int = 20_000) -> np.ndarray:
    """Up to ``limit`` of the object's vertices in world space (for framing), bounds otherwise."""
    mesh: Any = obj.data
    n = len(getattr(mesh, "vertices", ()))
    m = np.array(obj.matrix_world, dtype=np.float64)
    if n == 0:
        centre, radius = object_bounds(obj)
        return centre + radius * np.array([[-1, -1, -1], [1, 1, 1]], np.float64) / np.sqrt(3)
    xyz = np.empty(n * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", xyz)
    p = xyz.reshape(n, 3)[:: max(1, n // limit)].astype(np.float64)
    return p @ m[:3, :3].T + m[:3, 3]


def render_ring(obj: bpy.types.Object, out_dir: str, prefix: str, count: int = 4,
                elevation_deg: float = 20.0, lens_mm: float = 50.0,
                report: Callable[[str], None] | None = None) -> list[str]:
    """Add ``count`` cameras around ``obj`` (in their own collection), each framing the cloud
    at ``camera.FILL`` of its shorter side, and render each to PNG. ``report`` gets one line
    per view; Blender's per-tile output is silenced meanwhile."""
    scene: Any = bpy.context.scene
    coll = bpy.data.collections.get(RIG_COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(RIG_COLLECTION)
        scene.collection.children.link(coll)
    centre, radius = object_bounds(obj)
    pts = cloud_points(obj)
    dist = camera.fit_radius(radius, lens_mm=lens_mm)
    res = scene.render
    w = int(res.resolution_x * res.resolution_percentage / 100)
    h = int(res.resolution_y * res.resolution_percentage / 100)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, c2w in enumerate(camera.ring_poses(count, dist, elevation_deg, centre)):
        c2w = camera.framed_pose(pts, c2w, lens_mm, 36.0, w, h)
        cam = add_camera(f"{prefix} view {i:02d}", c2w, lens_mm, collection=coll)
        cam.data.clip_end = max(100.0, 4 * dist)
        scene.camera = cam
        path = os.path.join(out_dir, f"{prefix}_view_{i:02d}.png")
        scene.render.filepath = path
        t0 = time.perf_counter()
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
        paths.append(path)
        if report is not None:
            report(f"view {i + 1}/{count}: {path} ({w}x{h}, {time.perf_counter() - t0:.1f} s)")
    return paths
