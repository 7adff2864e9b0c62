"""Export Mesh and Bake Texture: a Make Mesh result out of Blender with Blender's own exporters
(GLB / PLY / OBJ), and its vertex colours baked into a UV texture for engines that ignore them."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import props
from .mesh import ensure_material, mesh_settings, mesh_targets
from .paths import resolve_dir, safe_name
from .selection import only_selected
from .views import scene_render_restored

FORMATS = ("GLB", "PLY", "OBJ")


def export_mesh(context: Any, obj: Any, path: str, fmt: str) -> str:
    """Blender's own exporters, the object alone: GLB (+Y up, metres, vertex colours as COLOR_0),
    PLY and OBJ (Z up, sRGB vertex colours). Returns the path written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with only_selected(context, obj):
        if fmt == "GLB":
            kw: dict[str, Any] = {"filepath": path, "export_format": "GLB", "use_selection": True,
                                  "export_yup": True, "export_apply": True}
            gltf: Any = bpy.ops.export_scene.gltf
            if "export_vertex_color" in gltf.get_rna_type().properties:
                kw["export_vertex_color"] = "ACTIVE"  # Blender 4.2+: not only when the material uses it
            bpy.ops.export_scene.gltf(**kw)
        elif fmt == "PLY":
            bpy.ops.wm.ply_export(filepath=path, export_selected_objects=True, apply_modifiers=True,
                                  export_colors="SRGB", export_normals=True, export_uv=False,
                                  export_triangulated_mesh=True, ascii_format=False,
                                  forward_axis="Y", up_axis="Z", global_scale=1.0)
        elif fmt == "OBJ":
            bpy.ops.wm.obj_export(filepath=path, export_selected_objects=True, apply_modifiers=True,
                                  export_colors=True, export_materials=True, export_uv=True,
                                  forward_axis="Y", up_axis="Z", global_scale=1.0)
        else:
            raise ValueError(f"unknown mesh format {fmt!r}; use one of {FORMATS}")
    return path


def bake_texture(context: Any, obj: Any, size: int = 512, samples: int = 1) -> Any:
    """Smart UV Project + a Cycles (CPU) emit bake of the vertex colours into an image, which the
    object's own copy of the material then uses: for engines that ignore vertex colours."""
    from . import render

    scene = context.scene
    img = bpy.data.images.new(f"{obj.name} Colour", size, size, alpha=False)
    with only_selected(context, obj):
        if obj.data.uv_layers.get("UVMap") is None:
            obj.data.uv_layers.new(name="UVMap")
        with context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                                   selected_editable_objects=[obj]):
            bpy.ops.object.mode_set(mode="EDIT")
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(island_margin=0.01)
            bpy.ops.object.mode_set(mode="OBJECT")
        mat = ensure_material().copy()
        mat.name = f"{obj.name} Baked"
        obj.data.materials.clear()
        obj.data.materials.append(mat)
        nodes, links = mat.node_tree.nodes, mat.node_tree.links
        bsdf = nodes["Principled BSDF"]
        vcol = next(n for n in nodes if n.bl_idname == "ShaderNodeVertexColor")
        emit = nodes.new("ShaderNodeEmission")
        out = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = img
        tex.location = (-300, -200)
        nodes.active = tex
        links.new(vcol.outputs["Color"], emit.inputs["Color"])
        old = out.inputs["Surface"].links[0].from_socket
        links.new(emit.outputs["Emission"], out.inputs["Surface"])
        with scene_render_restored(scene):
            render.configure_render(scene, "CYCLES", samples, 64)
            with context.temp_override(active_object=obj, object=obj, selected_objects=[obj]):
                bpy.ops.object.bake(type="EMIT", margin=4, use_clear=True)
        links.new(old, out.inputs["Surface"])
        nodes.remove(emit)
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    img.pack()
    return img


class IMAGE2POINTS_OT_export_mesh(bpy.types.Operator, ExportHelper):  # type: ignore[misc]
    """Export the selected Image2Points mesh as GLB (glTF, +Y up), PLY or OBJ with vertex colours"""

    bl_idname = "image2points.export_mesh"
    bl_label = "Export Mesh"
    bl_options = {"REGISTER"}

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb;*.ply;*.obj", options={"HIDDEN"})  # type: ignore[valid-type]
    format: EnumProperty(name="Format", default="GLB",  # type: ignore[valid-type]
                         items=[(f, f, "") for f in FORMATS])

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(mesh_targets(context))

    def invoke(self, context: Any, event: Any) -> set[Any]:  # type: ignore[override]
        s = mesh_settings(context)
        if s is not None:
            self.format = s.export_format
        self.filename_ext = "." + self.format.lower()
        if not self.filepath:  # type: ignore[has-type]
            sc = props.scene_settings(context)
            base = resolve_dir(sc.output_dir) if sc is not None else tempfile.gettempdir()
            name = safe_name(mesh_targets(context)[0].name)
            self.filepath = os.path.join(base, name + self.filename_ext)  # type: ignore[has-type]
        return ExportHelper.invoke(self, context, event)  # type: ignore[func-returns-value,return-value]

    def execute(self, context: Any) -> set[Any]:
        obj = mesh_targets(context)[0]
        ext = "." + self.format.lower()
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ext)
        try:
            export_mesh(context, obj, path, self.format)
        except (OSError, RuntimeError) as exc:
            self.report({"ERROR"}, f"Image2Points: cannot write {path}: {exc}")
            return {"CANCELLED"}
        props.set_job(context, "job", status=f"Exported '{obj.name}' to {path}")
        self.report({"INFO"}, f"Image2Points: wrote {path}")
        return {"FINISHED"}


class IMAGE2POINTS_OT_bake_mesh_texture(bpy.types.Operator):
    """Bake the mesh's vertex colours into a UV texture (Smart UV Project, Cycles on the CPU)"""

    bl_idname = "image2points.bake_mesh_texture"
    bl_label = "Bake Texture"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(mesh_targets(context))

    def execute(self, context: Any) -> set[Any]:
        obj = mesh_targets(context)[0]
        s = mesh_settings(context)
        try:
            img = bake_texture(context, obj, int(s.texture_size) if s is not None else 512)
        except RuntimeError as exc:
            self.report({"ERROR"}, f"Image2Points: bake failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Image2Points: baked '{img.name}' ({img.size[0]} px)")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_export_mesh, IMAGE2POINTS_OT_bake_mesh_texture)
