"""Novel views: a ring of cameras around a point object, rendered to PNGs plus a contact sheet,
with the artist's render settings, camera and visibility left as they were."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bpy
import numpy as np

from . import props, visibility
from .image_input import image_pixels_u8, save_png
from .paths import resolve_dir, safe_name
from .selection import target_objects

_RENDER_ATTRS = ("engine", "resolution_x", "resolution_y", "resolution_percentage", "filepath",
                 "film_transparent")


@contextmanager
def scene_render_restored(scene: Any) -> Iterator[None]:
    """Leave the artist's render settings, camera and render visibility as they were."""
    r = scene.render
    saved = {a: getattr(r, a) for a in _RENDER_ATTRS}
    fmt = (r.image_settings.file_format, r.image_settings.color_mode)
    cycles = getattr(scene, "cycles", None)
    cyc_samples = cycles.samples if cycles is not None else None
    eevee_samples = scene.eevee.taa_render_samples
    camera = scene.camera
    hidden = {o.name: o.hide_render for o in scene.objects}
    try:
        yield
    finally:
        for a, v in saved.items():
            setattr(r, a, v)
        r.image_settings.file_format, r.image_settings.color_mode = fmt
        if cycles is not None and cyc_samples is not None:
            cycles.samples = cyc_samples
        scene.eevee.taa_render_samples = eevee_samples
        scene.camera = camera
        for name, value in hidden.items():
            obj = scene.objects.get(name)
            if obj is not None:
                obj.hide_render = value


def contact_sheet(paths: list[Any], out_path: str, cols: int | None = None) -> str:
    """Tile the rendered PNGs (loaded as Image datablocks; or (H, W, 4) uint8 arrays) into one
    PNG; ``cols`` tiles a row (default: a square-ish grid)."""
    tiles = [p if isinstance(p, np.ndarray) else image_pixels_u8(load_image(p)) for p in paths]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.zeros((rows * h, cols * w, 4), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h:r * h + t.shape[0], c * w:c * w + t.shape[1]] = t
    save_png(sheet, out_path)
    load_image(out_path)
    return out_path


def load_image(path: str) -> Any:
    img = bpy.data.images.load(path, check_existing=True)
    img.reload()  # a re-render overwrote the file
    return img


def render_views(context: Any, obj: Any) -> list[str]:
    """Camera ring around ``obj`` with the scene settings; returns PNG paths + the contact sheet."""
    from . import render

    scene = context.scene
    s = props.scene_settings(context)
    prefix = safe_name(obj.name)
    out_dir = resolve_dir(s.output_dir, prefix)
    rig = bpy.data.collections.get(render.RIG_COLLECTION)
    if rig is not None:  # re-running replaces this object's cameras instead of piling up
        for cam in [o for o in rig.objects if o.name.startswith(f"{prefix} view ")]:
            bpy.data.objects.remove(cam, do_unlink=True)
    with scene_render_restored(scene), render.colour_restored(scene):
        r = scene.render
        if s.view_colour == "STANDARD":
            render.standard_colour(scene)
        if s.view_engine != "SCENE":
            r.engine = s.view_engine
        r.resolution_x = r.resolution_y = int(s.view_resolution)
        r.resolution_percentage = 100
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.film_transparent = False
        if r.engine == "CYCLES":
            scene.cycles.samples = int(s.view_samples)
        elif r.engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = int(s.view_samples)
        if scene.world is None:
            render.ensure_lighting(scene)
        with visibility.only_renderable(scene, obj):  # the default Cube must not hide the result
            paths = render.render_ring(obj, out_dir, prefix, int(s.view_count), float(s.view_elevation),
                                       report=print)
    for p in paths:
        load_image(p)
    sheet = contact_sheet(paths, os.path.join(out_dir, f"{prefix}_contact_sheet.png"))
    return [*paths, sheet]


class IMAGE2POINTS_OT_render_views(bpy.types.Operator):
    """Render a ring of novel views around the selected point object (PNGs + a contact sheet)"""

    bl_idname = "image2points.render_views"
    bl_label = "Render Novel Views"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(target_objects(context)) and props.scene_settings(context) is not None

    def execute(self, context: Any) -> set[Any]:
        obj = target_objects(context)[0]
        try:
            paths = render_views(context, obj)
        except (OSError, RuntimeError) as exc:
            self.report({"ERROR"}, f"Image2Points: rendering failed: {exc}")
            return {"CANCELLED"}
        props.set_job(context, "job", status=f"Rendered {len(paths) - 1} views to {os.path.dirname(paths[0])}")
        self.report({"INFO"}, f"Image2Points: {len(paths) - 1} views and a contact sheet in "
                              f"{os.path.dirname(paths[0])}")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_render_views,)
