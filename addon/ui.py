"""The 3D Viewport sidebar (N panel), tab "Image2Points".

draw() reads properties only: no network, no files, and it cannot raise (every panel body runs
behind a guard that shows a one-line note instead of a traceback).
"""

from collections.abc import Callable
from typing import Any

import bpy

from . import props
from .selection import target_objects

CATEGORY = "Image2Points"


def guarded(body: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Wrap a panel body so that odd state never turns into an exception in draw()."""

    def draw(self: Any, context: Any) -> None:
        try:
            body(self, context)
        except Exception as exc:  # noqa: BLE001 - draw() must never raise
            try:
                self.layout.label(text=f"Image2Points: cannot draw ({type(exc).__name__})", icon="ERROR")
            except Exception:  # noqa: BLE001
                pass

    draw.__doc__ = body.__doc__
    return draw


def progress_bar(layout: Any, state: Any) -> None:
    value = float(getattr(state, "progress", 0.0) or 0.0)
    stage = str(getattr(state, "stage", "") or "")
    text = f"{stage} {value * 100:.0f}%".strip()
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=value, type="BAR", text=text)
    else:
        row = layout.row()
        row.enabled = False
        row.prop(state, "progress", text=stage or "Progress", slider=True)


def job_lines(layout: Any, job: Any) -> None:
    """A job's status, error and warning lines (an IMAGE2POINTS_PG_job)."""
    if job.status:
        wrapped_label(layout, job.status, icon="INFO")
    if job.error_code:
        wrapped_label(layout, f"[{job.error_code}] {job.error_message}", icon="ERROR")
    if job.warning:
        wrapped_label(layout, job.warning, icon="ERROR")


def wrapped_label(layout: Any, text: str, icon: str = "NONE", width: int = 42) -> None:
    """Long messages over several label lines (panels do not wrap text)."""
    words, line = text.split(), ""
    lines = []
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    col = layout.column(align=True)
    for i, part in enumerate(lines[:8]):
        col.label(text=part, icon=icon if i == 0 else "BLANK1")


class _SidebarPanel:
    """Where every Image2Points panel lives: the 3D Viewport's N panel, own tab."""

    bl_space_type: Any = "VIEW_3D"  # (Any: fake-bpy types these as Literals on Panel itself)
    bl_region_type: Any = "UI"
    bl_category = CATEGORY


class _SubPanel(_SidebarPanel):
    bl_parent_id = "IMAGE2POINTS_PT_main"


class IMAGE2POINTS_PT_main(_SidebarPanel, bpy.types.Panel):
    bl_label = "Image2Points"
    bl_idname = "IMAGE2POINTS_PT_main"

    @guarded
    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        s = props.scene_settings(context)
        state = props.job_state(context)
        if s is None or state is None:
            layout.label(text="Image2Points is not fully registered", icon="ERROR")
            return

        col = layout.column(align=True)
        col.prop(s, "source", expand=True)
        if s.source == "IMAGE":
            col.template_ID(s, "image", open="image.open")
        elif s.source == "FILE":
            col.prop(s, "filepath", text="")
        else:
            col.label(text="Uses the image shown in an Image Editor", icon="IMAGE_DATA")
        col.label(text="Mask (optional; else alpha or automatic cut-out):")
        col.template_ID(s, "mask_image", open="image.open")

        box = layout.box()
        icon = "CHECKMARK" if state.backend_ok else ("ERROR" if state.backend_status else "QUESTION")
        wrapped_label(box, state.backend_status or "Backend: not checked yet", icon=icon)
        box.operator("image2points.check_backend", text="Check Backend", icon="FILE_REFRESH")

        col = layout.column(align=True)
        col.prop(s, "size")
        col.prop(s, "density")
        col.prop(s, "colour_mode")
        row = layout.row(align=True)
        row.scale_y = 1.4
        job = state.job
        if job.running:
            progress_bar(row, job)
            row.operator("image2points.cancel", text="", icon="CANCEL")
        else:
            row.operator("image2points.reconstruct", icon="POINTCLOUD_DATA")
        job_lines(layout, job)
        cut = bpy.data.images.get(state.cutout) if state.cutout else None
        if cut is not None and cut.preview is not None:
            layout.label(text="Cut-out used (background dimmed):")
            layout.template_icon(icon_value=cut.preview.icon_id, scale=8.0)


class IMAGE2POINTS_PT_points(_SubPanel, bpy.types.Panel):
    bl_label = "Points"
    bl_idname = "IMAGE2POINTS_PT_points"

    @guarded
    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        s = props.scene_settings(context)
        if s is None:
            return
        layout.prop(s, "radius")
        layout.prop(s, "use_colour")
        objs = target_objects(context)
        if objs:
            obj = objs[0]
            col = layout.column(align=True)
            col.label(text=f"{obj.name}: {obj.get('i2p_point_count', 0)} points", icon="OBJECT_DATA")
            src = obj.get("i2p_source_image", "")
            if src:
                col.label(text=f"from {src}", icon="BLANK1")
        row = layout.row(align=True)
        row.operator("image2points.export_ply", icon="EXPORT")
        row.operator("image2points.mark_asset", icon="ASSET_MANAGER")


class IMAGE2POINTS_PT_views(_SubPanel, bpy.types.Panel):
    bl_label = "Novel Views"
    bl_idname = "IMAGE2POINTS_PT_views"
    bl_options = {"DEFAULT_CLOSED"}

    @guarded
    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        s = props.scene_settings(context)
        if s is None:
            return
        col = layout.column(align=True)
        col.prop(s, "view_count")
        col.prop(s, "view_elevation")
        col.prop(s, "view_resolution")
        col.prop(s, "view_samples")
        layout.prop(s, "view_engine")
        layout.prop(s, "view_colour")
        layout.prop(s, "output_dir")
        layout.operator("image2points.render_views", icon="RENDER_STILL")


class IMAGE2POINTS_PT_nerf(_SubPanel, bpy.types.Panel):
    bl_label = "NeRF"
    bl_idname = "IMAGE2POINTS_PT_nerf"
    bl_options = {"DEFAULT_CLOSED"}

    @guarded
    def draw(self, context: Any) -> None:
        """Capture -> fit -> render / points (state only: the operators do the work)."""
        layout: Any = self.layout
        s = props.scene_settings(context)
        state = props.job_state(context)
        if s is None or state is None:
            return
        box = layout.box()
        col = box.column(align=True)
        col.prop(s, "nerf_views")
        col.prop(s, "nerf_test_views")
        col.prop(s, "nerf_resolution")
        col.prop(s, "nerf_samples")
        box.prop(s, "nerf_dir")
        row = box.row(align=True)
        row.operator("image2points.capture_views", icon="RENDER_STILL")
        row.operator("image2points.import_transforms", text="", icon="IMPORT")
        box = layout.box()
        box.prop(s, "nerf_dataset")
        row = box.row(align=True)
        row.prop(s, "nerf_field", text="")
        row.prop(s, "nerf_minutes")
        row = box.row(align=True)
        row.scale_y = 1.3
        job = state.nerf_job
        if job.running:
            progress_bar(row, job)
            row.operator("image2points.cancel_nerf", text="", icon="CANCEL")
        else:
            row.operator("image2points.fit_nerf", icon="VOLUME_DATA")
        if state.nerf_model_id:
            box.label(text=f"Model {state.nerf_model_id[:16]}", icon="CHECKMARK")
        col = box.column(align=True)
        col.operator("image2points.render_nerf", icon="IMAGE_DATA")
        row = col.row(align=True)
        row.prop(s, "nerf_max_points", text="Points")
        row.operator("image2points.import_nerf_points", text="Import Points", icon="POINTCLOUD_DATA")
        job_lines(layout, job)


CLASSES: tuple[type, ...] = (IMAGE2POINTS_PT_main, IMAGE2POINTS_PT_points, IMAGE2POINTS_PT_views,
                             IMAGE2POINTS_PT_nerf)
