"""Blender properties: job state on the WindowManager (never saved), artistic settings on the Scene.

Nothing secret lives here: endpoints, timeouts and key paths are add-on preferences (see
preferences.py), so a shared .blend never carries them.
"""


from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)


class IMAGE2POINTS_PG_job(bpy.types.PropertyGroup):
    """State of the current (or last) reconstruction job, shown by the panel."""

    running: BoolProperty(name="Running", default=False)  # type: ignore[valid-type]
    status: StringProperty(name="Status", default="")  # type: ignore[valid-type]
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0,  # type: ignore[valid-type]
                            subtype="FACTOR")
    stage: StringProperty(name="Stage", default="")  # type: ignore[valid-type]
    job_id: StringProperty(name="Job", default="")  # type: ignore[valid-type]
    error_code: StringProperty(name="Error code", default="")  # type: ignore[valid-type]
    error_message: StringProperty(name="Error", default="")  # type: ignore[valid-type]
    backend_status: StringProperty(name="Backend", default="")  # type: ignore[valid-type]
    backend_ok: BoolProperty(name="Backend reachable", default=False)  # type: ignore[valid-type]
    last_object: StringProperty(name="Last result", default="")  # type: ignore[valid-type]
    warning: StringProperty(name="Warning", default="")  # type: ignore[valid-type]
    cutout: StringProperty(name="Cut-out preview image", default="")  # type: ignore[valid-type]
    # NeRF (issue 6): its own job state, so a fit and a reconstruction never share a progress bar
    nerf_running: BoolProperty(name="NeRF running", default=False)  # type: ignore[valid-type]
    nerf_progress: FloatProperty(name="NeRF progress", default=0.0, min=0.0, max=1.0,  # type: ignore[valid-type]
                                 subtype="FACTOR")
    nerf_stage: StringProperty(name="NeRF stage", default="")  # type: ignore[valid-type]
    nerf_status: StringProperty(name="NeRF status", default="")  # type: ignore[valid-type]
    nerf_job_id: StringProperty(name="NeRF job", default="")  # type: ignore[valid-type]
    nerf_error_code: StringProperty(name="NeRF error code", default="")  # type: ignore[valid-type]
    nerf_error_message: StringProperty(name="NeRF error", default="")  # type: ignore[valid-type]
    nerf_model_id: StringProperty(name="NeRF model", default="",  # type: ignore[valid-type]
                                  description="Id of the fitted NeRF the backend keeps in memory")
    nerf_model_file: StringProperty(name="NeRF model file", default="")  # type: ignore[valid-type]
    nerf_progress_events: IntProperty(name="NeRF progress events", default=0)  # type: ignore[valid-type]


def _is_point_object(obj: Any) -> bool:
    return obj is not None and obj.type == "MESH" and "i2p_point_count" in obj


def _radius_update(self: Any, context: Any) -> None:
    """The panel's radius drives every selected Image2Points object (object-space radius)."""
    from . import points

    for obj in getattr(context, "selected_objects", None) or []:
        if _is_point_object(obj) and points.MODIFIER in obj.modifiers:
            size = float(obj.get("i2p_size_m", 2.0)) or 2.0
            points.set_radius(obj, self.radius / (size / 2))


ENGINES = [
    ("SCENE", "Scene Engine", "Render with the engine the scene already uses"),
    ("CYCLES", "Cycles", "Cycles (CPU or GPU as set in the scene)"),
    ("BLENDER_EEVEE_NEXT", "EEVEE", "EEVEE (fast with a GPU; very slow on CPU-only machines)"),
    ("BLENDER_WORKBENCH", "Workbench", "Workbench (flat preview)"),
]

SOURCES = [
    ("IMAGE", "Image", "An Image datablock in this file"),
    ("FILE", "File", "An image file on disk"),
    ("EDITOR", "Image Editor", "The image shown in an open Image Editor"),
]


class IMAGE2POINTS_PG_settings(bpy.types.PropertyGroup):
    """Artistic settings, saved with the scene."""

    source: EnumProperty(name="Source", items=SOURCES, default="IMAGE")  # type: ignore[valid-type]
    image: PointerProperty(name="Image", type=bpy.types.Image)  # type: ignore[valid-type]
    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")  # type: ignore[valid-type]
    mask_image: PointerProperty(  # type: ignore[valid-type]
        name="Mask", type=bpy.types.Image,
        description="Optional object mask (white or opaque = object), used instead of the image's "
                    "alpha or the automatic cut-out")
    size: FloatProperty(name="Size", default=2.0, min=0.001, soft_max=100.0, unit="LENGTH",  # type: ignore[valid-type]
                        description="Size of the imported object (its largest radius is half this)")
    radius: FloatProperty(name="Point Radius", default=0.012, min=0.0, soft_max=0.2,  # type: ignore[valid-type]
                          precision=4, unit="LENGTH", update=_radius_update,
                          description="Point radius in metres (also applied to selected results)")
    use_colour: BoolProperty(name="Colour", default=True,  # type: ignore[valid-type]
                             description="Import the predicted colours (off: plain points)")
    max_points: IntProperty(name="Max Points", default=200_000, min=100, max=5_000_000)  # type: ignore[valid-type]
    view_count: IntProperty(name="Views", default=8, min=1, max=64)  # type: ignore[valid-type]
    view_elevation: FloatProperty(name="Elevation", default=20.0, min=-89.0, max=89.0)  # type: ignore[valid-type]
    view_resolution: IntProperty(name="Resolution", default=256, min=16, max=4096)  # type: ignore[valid-type]
    view_engine: EnumProperty(name="Engine", items=ENGINES, default="SCENE")  # type: ignore[valid-type]
    view_samples: IntProperty(name="Samples", default=16, min=1, max=4096)  # type: ignore[valid-type]
    output_dir: StringProperty(name="Output", subtype="DIR_PATH",  # type: ignore[valid-type]
                               default="//image2points/",
                               description="Folder for renders and PLY files ('//' = next to the .blend)")
    # NeRF
    nerf_views: IntProperty(name="Views", default=48, min=4, max=400,  # type: ignore[valid-type]
                            description="Training cameras on the upper hemisphere")
    nerf_test_views: IntProperty(name="Held-out Views", default=4, min=0, max=64,  # type: ignore[valid-type]
                                 description="Test cameras on a separate orbit (transforms_test.json)")
    nerf_resolution: IntProperty(name="Resolution", default=100, min=16, max=2048)  # type: ignore[valid-type]
    nerf_samples: IntProperty(name="Samples", default=16, min=1, max=4096)  # type: ignore[valid-type]
    nerf_dir: StringProperty(name="Dataset Folder", subtype="DIR_PATH",  # type: ignore[valid-type]
                             default="//image2points/nerf/",
                             description="Where Capture Views writes images/ and transforms_*.json "
                             "('//' = next to the .blend)")
    nerf_dataset: StringProperty(name="Dataset", subtype="FILE_PATH", default="",  # type: ignore[valid-type]
                                 description="Dataset folder or transforms file to fit (set by Capture Views)")
    nerf_field: EnumProperty(name="Field", default="fast", items=[  # type: ignore[valid-type]
        ("fast", "Fast Grid", "Grid-based field: minutes on a CPU"),
        ("fast-sh", "Fast Grid + SH", "Grid-based field with view-dependent colour (shiny objects)"),
        ("mlp", "MLP", "A tuned MLP NeRF (slow on a CPU)"),
        ("mlp-seed", "MLP (seed)", "The seed's MLP NeRF as published: the slow reference")])
    nerf_minutes: FloatProperty(name="Minutes", default=2.0, min=0.05, max=60.0,  # type: ignore[valid-type]
                                description="Training budget")
    nerf_max_points: IntProperty(name="Max Points", default=100_000, min=100, max=5_000_000)  # type: ignore[valid-type]
    nerf_model_dir: StringProperty(name="Model Folder", subtype="DIR_PATH", default="",  # type: ignore[valid-type]
                                   description="Where fitted models are saved (empty: the extension's "
                                   "user folder)")


CLASSES = (IMAGE2POINTS_PG_job, IMAGE2POINTS_PG_settings)


def job_state(context: Any) -> Any:
    """The WindowManager job state, or None where there is none (draw() must cope)."""
    wm = getattr(context, "window_manager", None)
    return getattr(wm, "image2points", None) if wm is not None else None


def scene_settings(context: Any) -> Any:
    scene = getattr(context, "scene", None)
    return getattr(scene, "image2points", None) if scene is not None else None


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.image2points = PointerProperty(type=IMAGE2POINTS_PG_job)  # type: ignore[attr-defined,func-returns-value]
    bpy.types.Scene.image2points = PointerProperty(type=IMAGE2POINTS_PG_settings)  # type: ignore[attr-defined,func-returns-value]


def unregister() -> None:
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "image2points"):
            del owner.image2points  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
