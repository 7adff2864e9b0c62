"""Objects the project never trains on, made by Blender itself (the bpy wheel), for evaluation.

Suzanne (Blender's monkey), 3D text glyphs in Blender's bundled font and metaball blobs: shapes
designed outside this project's procedural families. Each becomes a one-part ``Shape`` with a
seeded colour so it renders exactly like the training data.
"""

from __future__ import annotations

import numpy as np
import trimesh

from .shapes import Shape

GLYPHS = ("A", "K", "R", "5", "?", "&")


def _to_trimesh(bpy, obj) -> trimesh.Trimesh:
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    mesh = ev.to_mesh()
    mesh.calc_loop_triangles()
    v = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", v)
    f = np.empty(len(mesh.loop_triangles) * 3, np.int64)
    mesh.loop_triangles.foreach_get("vertices", f)
    m = np.array(obj.matrix_world)
    verts = v.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    ev.to_mesh_clear()
    return trimesh.Trimesh(verts, f.reshape(-1, 3), process=True)


def _objects(bpy) -> list[tuple[str, object]]:
    ops = bpy.ops
    out = []
    ops.mesh.primitive_monkey_add()
    m = bpy.context.object
    m.modifiers.new("sub", "SUBSURF").levels = 1
    out.append(("suzanne", m))
    for g in GLYPHS:
        ops.object.text_add()
        t = bpy.context.object
        t.data.body = g
        t.data.extrude = 0.12
        t.data.align_x = "CENTER"
        t.rotation_euler = (np.pi / 2, 0, 0)  # stand the glyph up (z is up in the model frame)
        out.append((f"glyph_{g}", t))
    for k in range(3):
        ops.object.metaball_add(type="BALL")
        mb = bpy.context.object
        mb.data.resolution = 0.08
        rng = np.random.default_rng(k)
        el = mb.data.elements[0]
        el.radius = 1.0
        for _ in range(3):
            e = mb.data.elements.new()
            e.co = rng.uniform(-0.9, 0.9, 3)
            e.radius = rng.uniform(0.5, 0.9)
        out.append((f"blob_{k}", mb))
    return out


def blender_shapes(seed: int = 0) -> list[tuple[str, Shape]]:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    rng = np.random.default_rng([seed, 99])
    shapes = []
    for name, obj in _objects(bpy):
        for other in bpy.context.scene.objects:  # isolate: metaballs of one family merge
            other.hide_viewport = other is not obj
        bpy.context.view_layer.update()
        mesh = _to_trimesh(bpy, obj)
        c = rng.uniform(0.1, 1.0, (1, 3)).astype(np.float32)
        shapes.append((name, Shape("third_party", mesh, np.zeros(len(mesh.faces), np.int32), c,
                                   np.clip(c * 0.5, 0, 1), ["solid"], np.ones(1, np.float32))))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return shapes
