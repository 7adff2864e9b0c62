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

from .core.limits import MAX_POINTS


class IMAGE2POINTS_PG_job(bpy.types.PropertyGroup):
    """State of one kind of job (the current or last one), shown by the panel: one of these per
    kind, so a NeRF fit and a reconstruction never share a progress bar."""

    running: BoolProperty(name="Running", default=False,  # type: ignore[valid-type]
                          description="A job of this kind is in progress")
    status: StringProperty(name="Status", default="",  # type: ignore[valid-type]
                           description="Last thing the job did")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0,  # type: ignore[valid-type]
                            subtype="FACTOR", description="Share of the job done (0 to 1)")
    stage: StringProperty(name="Stage", default="",  # type: ignore[valid-type]
                          description="The backend's current step")
    job_id: StringProperty(name="Job", default="",  # type: ignore[valid-type]
                           description="Id of the running job")
    error_code: StringProperty(name="Error code", default="",  # type: ignore[valid-type]
                               description="Code of the last error (BAD_INPUT, TIMEOUT, ...)")
    error_message: StringProperty(name="Error", default="",  # type: ignore[valid-type]
                                  description="What went wrong last")
    warning: StringProperty(name="Warning", default="",  # type: ignore[valid-type]
                            description="The last result's warning (e.g. a doubtful cut-out)")
    progress_events: IntProperty(name="Progress events", default=0,  # type: ignore[valid-type]
                                 description="Progress messages received (a count)")


class IMAGE2POINTS_PG_state(bpy.types.PropertyGroup):
    """What the panel shows: the backend check, each job kind's state and the last results."""

    job: PointerProperty(type=IMAGE2POINTS_PG_job,  # type: ignore[valid-type]
                         name="Job", description="The reconstruction (or meshing) job")
    nerf_job: PointerProperty(type=IMAGE2POINTS_PG_job,  # type: ignore[valid-type]
                              name="NeRF job", description="The NeRF capture or fit")
    backend_status: StringProperty(name="Backend", default="",  # type: ignore[valid-type]
                                   description="What the last check found")
    backend_ok: BoolProperty(name="Backend reachable", default=False,  # type: ignore[valid-type]
                             description="The last check reached the backend")
    last_object: StringProperty(name="Last result", default="",  # type: ignore[valid-type]
                                description="Name of the last imported object")
    cutout: StringProperty(name="Cut-out preview image", default="",  # type: ignore[valid-type]
                           description="Name of the image showing the last cut-out")
    nerf_model_id: StringProperty(name="NeRF model", default="",  # type: ignore[valid-type]
                                  description="Id of the fitted NeRF the backend keeps in memory")
    nerf_model_file: StringProperty(name="NeRF model file", default="",  # type: ignore[valid-type]
                                    description="Where the fitted NeRF was saved")


def radius_changed(context: Any = None) -> None:
    """The panel's radius drives every selected Image2Points object (object-space radius).

    Called by a message-bus subscription, not an ``update=`` callback: in the bpy 4.2 module a
    property with a Python update callback makes the process segfault at exit after an in-session
    ``extensions.package_uninstall`` (reproduced with a ten-line extension and no project code).
    """
    from . import points
    from .selection import is_point_object

    ctx: Any = context or bpy.context
    s = scene_settings(ctx)
    if s is None:
        return
    for obj in getattr(ctx, "selected_objects", None) or []:
        if is_point_object(obj) and points.MODIFIER in obj.modifiers:
            size = float(obj.get("i2p_size_m", 2.0)) or 2.0
            points.set_radius(obj, s.radius / (size / 2))


def colour_mode_changed(context: Any = None) -> None:
    """All clouds share one material: switching the look restyles every one of them (a message-bus
    subscription, like ``radius_changed``)."""
    from . import points

    s = scene_settings(context or bpy.context)
    if s is not None:
        points.set_colour_mode(s.colour_mode)


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

    source: EnumProperty(name="Source", items=SOURCES, default="IMAGE",  # type: ignore[valid-type]
                         description="Where the input picture comes from")
    image: PointerProperty(name="Image", type=bpy.types.Image,  # type: ignore[valid-type]
                           description="The picture to reconstruct (any format Blender opens)")
    filepath: StringProperty(name="File", subtype="FILE_PATH", default="",  # type: ignore[valid-type]
                             description="Image file to reconstruct (any format Blender opens)")
    mask_image: PointerProperty(  # type: ignore[valid-type]
        name="Mask", type=bpy.types.Image,
        description="Optional object mask (white or opaque = object), used instead of the image's "
                    "alpha or the automatic cut-out")
    size: FloatProperty(name="Size", default=2.0, min=0.001, soft_max=100.0, unit="LENGTH",  # type: ignore[valid-type]
                        description="Size of the imported object in metres (its largest radius is half this)")
    radius: FloatProperty(name="Point Radius", default=0.012, min=0.0, soft_max=0.2,  # type: ignore[valid-type]
                          precision=4, unit="LENGTH",
                          description="Point radius in metres (also applied to selected results)")
    use_colour: BoolProperty(name="Colour", default=True,  # type: ignore[valid-type]
                             description="Import the predicted colours (off: plain points)")
    max_points: IntProperty(name="Max Points", default=200_000, min=100, max=MAX_POINTS,  # type: ignore[valid-type]
                            description="Not used any more (kept so older .blend files load): "
                            "Density sets how many points a new cloud has")
    density: IntProperty(name="Density", default=100_000, min=10_000, max=1_000_000,  # type: ignore[valid-type]
                         description="Points in a new cloud (10,000-1,000,000): every visible pixel of "
                         "the image, the rest from the model")
    colour_mode: EnumProperty(name="Colours", default="PHOTO", items=[  # type: ignore[valid-type]
        ("PHOTO", "As Photographed", "The image's colours as they are, unaffected by scene lights"),
        ("LIT", "Lit", "The colours as albedo, shaded by the scene's lights")],
        description="How every Image2Points cloud shows its colours (they share one material)")
    view_colour: EnumProperty(name="View Colours", default="STANDARD", items=[  # type: ignore[valid-type]
        ("STANDARD", "Standard", "Render the views with the Standard view transform, so the "
         "input's direction shows the input's colours"),
        ("SCENE", "Scene", "Use the scene's colour management (e.g. AgX)")],
        description="Colour management of the novel views")
    view_count: IntProperty(name="Views", default=8, min=1, max=64,  # type: ignore[valid-type]
                            description="Number of cameras in the ring around the object (one picture each)")
    view_elevation: FloatProperty(name="Elevation (°)", default=20.0, min=-89.0, max=89.0,  # type: ignore[valid-type]
                                  description="Camera height above the object's horizon, in degrees (0 = level, 89 = from above)")
    view_resolution: IntProperty(name="Resolution", default=512, min=16, max=4096, subtype="PIXEL",  # type: ignore[valid-type]
                                 description="Width and height of each square view, in pixels")
    view_engine: EnumProperty(name="Engine", items=ENGINES, default="SCENE",  # type: ignore[valid-type]
                              description="Render engine for the views (Cycles on machines without a GPU)")
    view_samples: IntProperty(name="Samples", default=16, min=1, max=4096,  # type: ignore[valid-type]
                              description="Render samples per pixel (more: less noise, slower)")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH",  # type: ignore[valid-type]
                               default="//image2points/",
                               description="Folder for renders and PLY files ('//' = next to the .blend)")
    # NeRF
    nerf_views: IntProperty(name="Views", default=48, min=4, max=400,  # type: ignore[valid-type]
                            description="Number of training cameras on the upper hemisphere")
    nerf_test_views: IntProperty(name="Held-out Views", default=4, min=0, max=64,  # type: ignore[valid-type]
                                 description="Number of test cameras on a separate orbit (transforms_test.json)")
    nerf_resolution: IntProperty(name="Resolution", default=100, min=16, max=2048, subtype="PIXEL",  # type: ignore[valid-type]
                                 description="Width and height of each captured image, in pixels")
    nerf_samples: IntProperty(name="Samples", default=16, min=1, max=4096,  # type: ignore[valid-type]
                              description="Render samples per pixel for the captured images")
    nerf_dir: StringProperty(name="Dataset Folder", subtype="DIR_PATH",  # type: ignore[valid-type]
                             default="//image2points/nerf/",
                             description="Where Capture Views writes images/ and transforms_*.json "
                             "('//' = next to the .blend)")
    nerf_dataset: StringProperty(name="Dataset", subtype="FILE_PATH", default="",  # type: ignore[valid-type]
                                 description="Dataset folder or transforms file to fit (set by Capture Views)")
    nerf_field: EnumProperty(name="Field", default="fast", description="Kind of NeRF to fit", items=[  # type: ignore[valid-type]
        ("fast", "Fast Grid", "Grid-based field: minutes on a CPU"),
        ("fast-sh", "Fast Grid + SH", "Grid-based field with view-dependent colour (shiny objects)"),
        ("mlp", "MLP", "A tuned MLP NeRF (slow on a CPU)"),
        ("mlp-seed", "MLP (seed)", "The seed's MLP NeRF as published: the slow reference")])
    nerf_minutes: FloatProperty(name="Minutes", default=2.0, min=0.05, max=60.0,  # type: ignore[valid-type]
                                description="Training budget, in minutes of wall time")
    nerf_max_points: IntProperty(name="Max Points", default=100_000, min=100, max=MAX_POINTS,  # type: ignore[valid-type]
                                 description="Most surface points to import from the fitted NeRF")
    nerf_model_dir: StringProperty(name="Model Folder", subtype="DIR_PATH", default="",  # type: ignore[valid-type]
                                   description="Where fitted models are saved (empty: the extension's "
                                   "user folder)")


CLASSES = (IMAGE2POINTS_PG_job, IMAGE2POINTS_PG_state, IMAGE2POINTS_PG_settings)


def job_state(context: Any) -> Any:
    """The WindowManager state (IMAGE2POINTS_PG_state), or None where there is none (draw()
    must cope)."""
    wm = getattr(context, "window_manager", None)
    return getattr(wm, "image2points", None) if wm is not None else None


def job(context: Any, slot: str) -> Any:
    """One job kind's state ("job" or "nerf_job"), or None."""
    state = job_state(context)
    return getattr(state, slot, None) if state is not None else None


def redraw(context: Any) -> None:
    wm = getattr(context, "window_manager", None)
    for window in getattr(wm, "windows", None) or []:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


def _assign(target: Any, context: Any, values: dict[str, Any]) -> None:
    if target is None:
        return
    for key, value in values.items():
        setattr(target, key, value)
    redraw(context)


def set_state(context: Any, **values: Any) -> None:
    """Set fields of the WindowManager state (backend check, last results) and redraw."""
    _assign(job_state(context), context, values)


def set_job(context: Any, slot: str, **values: Any) -> None:
    """Set fields of one job kind's state and redraw."""
    _assign(job(context, slot), context, values)


def scene_settings(context: Any) -> Any:
    scene = getattr(context, "scene", None)
    return getattr(scene, "image2points", None) if scene is not None else None


_MSGBUS_OWNER = object()


def _subscribe() -> None:
    bpy.msgbus.subscribe_rna(key=(IMAGE2POINTS_PG_settings, "radius"), owner=_MSGBUS_OWNER,
                             args=(), notify=radius_changed)
    bpy.msgbus.subscribe_rna(key=(IMAGE2POINTS_PG_settings, "colour_mode"), owner=_MSGBUS_OWNER,
                             args=(), notify=colour_mode_changed)


@bpy.app.handlers.persistent
def _resubscribe(*_args: Any) -> None:
    """Loading a file drops every message-bus subscription; take ours up again."""
    bpy.msgbus.clear_by_owner(_MSGBUS_OWNER)
    _subscribe()


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.image2points = PointerProperty(type=IMAGE2POINTS_PG_state)  # type: ignore[attr-defined,func-returns-value]
    bpy.types.Scene.image2points = PointerProperty(type=IMAGE2POINTS_PG_settings)  # type: ignore[attr-defined,func-returns-value]
    _subscribe()
    bpy.app.handlers.load_post.append(_resubscribe)


def unregister() -> None:
    bpy.msgbus.clear_by_owner(_MSGBUS_OWNER)
    if _resubscribe in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_resubscribe)
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "image2points"):
            del owner.image2points  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
