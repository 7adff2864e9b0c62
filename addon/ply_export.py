"""Export PLY: a point object as a coloured binary PLY in world coordinates (Z up, metres).

Blender's own PLY exporter writes it when its file checks out (x, y, z and colours, read back
here), else core.plyio does.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ExportHelper

from . import points, props
from .paths import resolve_dir, safe_name
from .selection import only_selected, target_objects

_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4",
              "uint": "<u4", "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1",
              "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
              "float32": "<f4", "float64": "<f8"}


def read_ply_vertices(path: str) -> np.ndarray:
    """The vertex element of a binary little-endian PLY as a numpy record array."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError("not a binary little-endian PLY")
    fields: list[tuple[str, str]] = []
    count, in_vertex = -1, False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            if in_vertex:
                break
            in_vertex = parts[1] == "vertex"
            count = int(parts[2]) if in_vertex else count
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list":
                raise ValueError("list property in the vertex element")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if count < 0:
        raise ValueError("no vertex element")
    return np.frombuffer(data, np.dtype(fields), count=count, offset=end)


def ply_matches(path: str, obj: Any) -> bool:
    """Does the file hold exactly this cloud in world space, with colours?"""
    try:
        v = read_ply_vertices(path)
    except (OSError, ValueError, KeyError):
        return False
    names = set(v.dtype.names or ())
    if not {"x", "y", "z", "red", "green", "blue"} <= names:
        return False
    xyz, rgb = points.world_points(obj)
    if len(v) != len(xyz):
        return False
    got = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if not np.allclose(got, xyz, atol=1e-4 * max(1.0, float(np.abs(xyz).max(initial=1.0)))):
        return False
    if rgb is not None:
        col = np.stack([v["red"], v["green"], v["blue"]], 1).astype(int)
        if np.abs(col - rgb.astype(int)).max(initial=0) > 2:
            return False
    return True


def export_ply(context: Any, obj: Any, path: str) -> str:
    """Blender's own PLY exporter when its file checks out (x,y,z + colours), else plyio.
    Returns which writer was used: 'blender' or 'image2points'."""
    from .core.plyio import write_ply

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with only_selected(context, obj):
            bpy.ops.wm.ply_export(filepath=path, export_selected_objects=True, apply_modifiers=False,
                                  export_colors="SRGB", export_normals=False, export_uv=False,
                                  export_triangulated_mesh=False, ascii_format=False,
                                  forward_axis="Y", up_axis="Z", global_scale=1.0)
        if ply_matches(path, obj):
            return "blender"
    except (RuntimeError, AttributeError, TypeError):
        pass
    xyz, rgb = points.world_points(obj)
    if rgb is None:
        rgb = np.full((len(xyz), 3), 255, np.uint8)
    write_ply(path, xyz, rgb, comment=f"Image2Points {obj.name} Blender world coordinates (Z up, metres)")
    return "image2points"


class IMAGE2POINTS_OT_export_ply(bpy.types.Operator, ExportHelper):  # type: ignore[misc]
    """Export the selected point object as a coloured PLY (world coordinates, Z up)"""

    bl_idname = "image2points.export_ply"
    bl_label = "Export PLY"
    bl_options = {"REGISTER"}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(target_objects(context))

    def invoke(self, context: Any, event: Any) -> set[Any]:  # type: ignore[override]
        if not self.filepath:  # type: ignore[has-type]
            s = props.scene_settings(context)
            obj = target_objects(context)[0]
            base = resolve_dir(s.output_dir) if s is not None else tempfile.gettempdir()
            self.filepath = os.path.join(base, safe_name(obj.name) + ".ply")  # type: ignore[has-type]
        return ExportHelper.invoke(self, context, event)  # type: ignore[func-returns-value,return-value]

    def execute(self, context: Any) -> set[Any]:
        obj = target_objects(context)[0]
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".ply")
        try:
            writer = export_ply(context, obj, path)
        except OSError as exc:
            self.report({"ERROR"}, f"Image2Points: cannot write {path}: {exc}")
            return {"CANCELLED"}
        props.set_job(context, "job", status=f"Exported {obj['i2p_point_count']} points to {path}")
        self.report({"INFO"}, f"Image2Points: wrote {path} ({writer} PLY writer)")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_export_ply,)
