"""Make Mesh: a reconstructed point object -> a watertight, vertex-coloured mesh object beside it
(exporting and baking it: mesh_export.py).

The meshing runs in the backend (op ``mesh``, backend/model/meshing.py): Blender's Python has no
scipy, and the native Geometry Nodes route (Points to Volume -> Volume to Mesh) gives a
double-walled shell with no inside (bench/bench_mesh.py measures both). Make Mesh polls its own
socket from a modal timer (the shared ModalTaskOperator skeleton), so the UI never waits; scripts
and batch block with a deadline. Bulk data goes in with ``foreach_set``.
"""

from __future__ import annotations

from typing import Any, cast

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty

from . import points
from .connection import EndpointProps
from .core.client import BackendError, JobResult
from .core.mesh_result import mesh_from_result
from .job_task import BackendTask, active
from .modal_task import ModalTaskOperator
from .selection import select_only, target_objects

MATERIAL = "Image2Points Mesh"
COLOR_ATTR = points.COLOR_ATTR


class Image2PointsMeshSettings(bpy.types.PropertyGroup):
    """The Make Mesh controls (Scene.image2points_mesh); defaults suit the sample images."""

    detail: IntProperty(name="Detail", default=128, min=8, max=384,  # type: ignore[valid-type]
                        description="Voxels across the object (never finer than the point spacing)")
    target_faces: IntProperty(name="Max Faces", default=200_000, min=0,  # type: ignore[valid-type]
                              description="Upper bound on faces; a coarser grid meets it and stays "
                                          "watertight (0 = no limit)")
    smooth: IntProperty(name="Smoothing", default=12, min=0, max=100,  # type: ignore[valid-type]
                        description="Taubin smoothing iterations (volume-keeping)")
    fill_holes: IntProperty(name="Fill Holes", default=-1, min=-1, max=16,  # type: ignore[valid-type]
                            description="Bridge gaps in the cloud up to about twice this many voxels "
                                        "(-1 = auto: just enough for a solid; 0 = off: a leaky "
                                        "cloud gives a thin shell)")
    close_bottom: BoolProperty(name="Close Bottom", default=False,  # type: ignore[valid-type]
                               description="Fill each vertical column between its lowest and highest "
                                           "point (closes an open, unseen bottom)")
    export_format: EnumProperty(name="Format", default="GLB",  # type: ignore[valid-type]
                                description="File format for Export Mesh",
                                items=[("GLB", "glTF (.glb)", "Binary glTF, +Y up, metres"),
                                       ("PLY", "PLY", "Vertex-coloured PLY, Z up"),
                                       ("OBJ", "OBJ", "OBJ with vertex colours, Z up")])
    texture_size: IntProperty(name="Texture Size", default=512, min=64, max=4096,  # type: ignore[valid-type]
                              description="Width and height in pixels of the texture Bake Texture makes")


def mesh_settings(context: Any) -> Any:
    return getattr(getattr(context, "scene", None), "image2points_mesh", None)


def is_mesh_result(obj: Any) -> bool:
    return obj is not None and getattr(obj, "type", "") == "MESH" and "i2p_mesh_faces" in obj


def mesh_targets(context: Any) -> list[Any]:
    objs = [o for o in (getattr(context, "selected_objects", None) or []) if is_mesh_result(o)]
    active = getattr(context, "active_object", None)
    if is_mesh_result(active) and active not in objs:
        objs.insert(0, active)
    return objs


def mesh_params(s: Any) -> dict[str, Any]:
    if s is None:
        return {"up": 2}
    return {"detail": int(s.detail), "target_faces": int(s.target_faces), "smooth": int(s.smooth),
            "fill_holes": int(s.fill_holes), "close_bottom": bool(s.close_bottom), "up": 2}


def request_mesh(client: Any, xyz: np.ndarray, rgb: np.ndarray | None, params: dict[str, Any],
                 timeout: float = 120.0, stall_timeout: float = 10.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One blocking ``mesh`` job; checked (vertices, faces, colours, meta). Raises BackendError."""
    blobs: dict[str, Any] = {"xyz": np.ascontiguousarray(xyz, np.float32)}
    if rgb is not None:
        blobs["rgb"] = np.ascontiguousarray(rgb, np.uint8)
    job = client.submit("mesh", params, blobs)
    res = client.wait(job, timeout=timeout, stall_timeout=stall_timeout)
    return mesh_from_result(res)


def ensure_material() -> Any:
    """Principled BSDF whose Base Color is the byte colour attribute: vertex colours by default."""
    mat: Any = bpy.data.materials.get(MATERIAL)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF") or nodes.new("ShaderNodeBsdfPrincipled")
    attr = nodes.new("ShaderNodeVertexColor")  # the node glTF's exporter reads as COLOR_0
    attr.layer_name = COLOR_ATTR
    attr.location = (-300, 100)
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    return mat


def build_mesh_object(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                      collection: Any) -> Any:
    """Triangles + a POINT-domain byte colour attribute (sRGB bytes kept exactly), smooth shaded."""
    n, nf = len(vertices), len(faces)
    me: Any = bpy.data.meshes.new(name)
    me.vertices.add(n)
    me.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(vertices, np.float32).ravel())
    me.loops.add(3 * nf)
    me.polygons.add(nf)
    me.attributes[".corner_vert"].data.foreach_set("value", np.ascontiguousarray(faces, np.int32).ravel())
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * nf, 3, dtype=np.int32))
    me.update(calc_edges=True)
    attr = me.color_attributes.new(name=COLOR_ATTR, type="BYTE_COLOR", domain="POINT")
    rgba = np.ones((n, 4), np.float32)
    rgba[:, :3] = np.asarray(colors, np.float32) / 255.0
    attr.data.foreach_set("color_srgb", rgba.ravel())
    me.color_attributes.active_color = attr
    me.color_attributes.render_color_index = me.color_attributes.active_color_index
    me.shade_smooth()
    me.materials.append(ensure_material())
    obj = bpy.data.objects.new(name, me)
    collection.objects.link(obj)
    return obj


def make_mesh(context: Any, src: Any, client: Any, params: dict[str, Any], timeout: float = 120.0,
              stall_timeout: float = 10.0) -> Any:
    """Blocking: the point object's cloud (object space, Blender axes) -> a mesh object beside it."""
    xyz, rgb = points.point_arrays(src)
    v, f, c, meta = request_mesh(client, xyz, rgb, params, timeout, stall_timeout)
    return mesh_object_for(context, src, v, f, c, meta)


def mesh_object_for(context: Any, src: Any, v: np.ndarray, f: np.ndarray, c: np.ndarray,
                    meta: dict[str, Any]) -> Any:
    """The mesh as an object with the point object's transform, collections and provenance,
    named '<points> Mesh'."""
    colls = list(src.users_collection) or [context.scene.collection]
    obj = build_mesh_object(f"{src.name} Mesh", v, f, c, colls[0])
    for coll in colls[1:]:
        coll.objects.link(obj)
    obj.matrix_world = src.matrix_world.copy()
    for key in src.keys():
        if key.startswith("i2p_") and key != "i2p_point_count":
            obj[key] = src[key]
    obj["i2p_source_object"] = src.name
    obj["i2p_mesh_faces"] = len(f)
    obj["i2p_mesh_voxel"] = float(meta.get("voxel", 0.0))
    obj["i2p_mesh_watertight"] = bool(meta.get("watertight", False))
    return obj


class MeshTask(BackendTask):
    """One ``mesh`` job (the shared BackendTask skeleton; shown in the reconstruction's state)."""

    op = "mesh"
    slot = "job"
    what = "meshing"
    busy = "a reconstruction or meshing job is already running; cancel it first"

    def __init__(self, src: Any, cfg: Any, params: dict[str, Any]):
        super().__init__(cfg)
        self.src_name, self.params = src.name, params
        self.result_object: Any = None

    def request(self, context: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        src = bpy.data.objects.get(self.src_name)
        if src is None:
            raise BackendError("BAD_INPUT", f"'{self.src_name}' is gone")
        xyz, rgb = points.point_arrays(src)
        return self.params, ({"xyz": xyz, "rgb": rgb} if rgb is not None else {"xyz": xyz}), {}

    def submitted(self) -> str:
        return f"Meshing '{self.src_name}'..."

    def on_result(self, context: Any, res: JobResult) -> str:
        src = bpy.data.objects.get(self.src_name)
        if src is None:
            raise BackendError("BAD_INPUT", f"'{self.src_name}' was deleted meanwhile")
        v, f, c, meta = mesh_from_result(res)
        self.result_object = obj = mesh_object_for(context, src, v, f, c, meta)
        select_only(context, obj)
        self.summary = f"made '{obj.name}' ({len(f)} faces)"
        return f"Made '{obj.name}': {len(f)} faces" + (", watertight" if obj["i2p_mesh_watertight"] else "")


# -- operators ------------------------------------------------------------------------------------

class IMAGE2POINTS_OT_make_mesh(ModalTaskOperator, EndpointProps, bpy.types.Operator):
    """Turn the selected point object into a watertight, vertex-coloured mesh beside it (backend)"""

    bl_idname = "image2points.make_mesh"
    bl_label = "Make Mesh"
    bl_options = {"REGISTER", "UNDO"}

    _task: MeshTask | None = None

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(target_objects(context)) and active("job") is None

    def make_task(self, context: Any) -> MeshTask:
        return MeshTask(target_objects(context)[0], self.settings(context),
                        mesh_params(mesh_settings(context)))


class IMAGE2POINTS_PT_mesh(bpy.types.Panel):
    bl_label = "Mesh"
    bl_idname = "IMAGE2POINTS_PT_mesh"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Image2Points"
    bl_parent_id = "IMAGE2POINTS_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: Any) -> None:
        from .ui import guarded

        guarded(_draw_mesh_panel)(self, context)


def _draw_mesh_panel(self: Any, context: Any) -> None:
    layout: Any = self.layout
    s = mesh_settings(context)
    if s is None:
        return
    col = layout.column(align=True)
    col.prop(s, "detail")
    col.prop(s, "target_faces")
    col.prop(s, "smooth")
    col.prop(s, "fill_holes")
    layout.prop(s, "close_bottom")
    row = layout.row()
    row.scale_y = 1.3
    row.operator("image2points.make_mesh", icon="MESH_DATA")
    meshes = mesh_targets(context)
    if meshes:
        obj = meshes[0]
        layout.label(text=f"{obj.name}: {obj.get('i2p_mesh_faces', 0)} faces", icon="OBJECT_DATA")
    row = layout.row(align=True)
    row.prop(s, "export_format", text="")
    op = row.operator("image2points.export_mesh", icon="EXPORT")
    op.format = s.export_format
    row = layout.row(align=True)
    row.prop(s, "texture_size", text="")
    row.operator("image2points.bake_mesh_texture", icon="TEXTURE")
    layout.operator("image2points.mark_asset", icon="ASSET_MANAGER")


CLASSES: tuple[type, ...] = (Image2PointsMeshSettings, IMAGE2POINTS_OT_make_mesh, IMAGE2POINTS_PT_mesh)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    cast(Any, bpy.types.Scene).image2points_mesh = PointerProperty(  # type: ignore[func-returns-value]
        type=Image2PointsMeshSettings)


def unregister() -> None:
    del cast(Any, bpy.types.Scene).image2points_mesh
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
