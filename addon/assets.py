"""Mark as Asset: point objects and meshes made from them become assets with provenance and a
preview rendered from the input's direction (asset_preview.py)."""

from __future__ import annotations

from typing import Any

import bpy

from .selection import target_objects


def mark_asset(obj: Any) -> None:
    """Mark as an asset with a description and tags from the provenance (no preview needed);
    a point object or a mesh made from one (Make Mesh)."""
    if obj.asset_data is None:
        obj.asset_mark()
    ad = obj.asset_data
    is_mesh = "i2p_mesh_faces" in obj
    what = (f"mesh: {obj.get('i2p_mesh_faces', 0)} faces" if is_mesh
            else f"point cloud: {obj.get('i2p_point_count', 0)} points")
    ad.description = (f"Image2Points {what} of '{obj.get('i2p_source_image', '?')}', "
                      f"model {obj.get('i2p_model', '?') or '?'}, job {obj.get('i2p_job', '?')}")
    for tag in ("Image2Points", "mesh" if is_mesh else "point cloud"):
        if tag not in ad.tags:
            ad.tags.new(tag)
    if hasattr(ad, "author") and not ad.author:
        ad.author = "Image2Points"


def asset_targets(context: Any) -> list[Any]:
    """Selected point objects and meshes made from them."""
    from .mesh import mesh_targets

    return target_objects(context) + [o for o in mesh_targets(context) if o not in target_objects(context)]


class IMAGE2POINTS_OT_mark_asset(bpy.types.Operator):
    """Mark the selected point objects or meshes as assets, with provenance and a preview from the input's direction"""

    bl_idname = "image2points.mark_asset"
    bl_label = "Mark as Asset"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(asset_targets(context))

    def execute(self, context: Any) -> set[Any]:
        from .asset_preview import set_preview

        objs = asset_targets(context)
        for obj in objs:
            mark_asset(obj)
            set_preview(context, obj)
        self.report({"INFO"}, f"Image2Points: marked {len(objs)} object(s) as assets")
        return {"FINISHED"}



CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_mark_asset,)
