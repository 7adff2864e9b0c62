"""Make Mesh, mesh export, texture bake and Mark as Asset on the real bpy wheel, with the demo image
(examples/chair.png) through a real backend process; batch ``--mesh``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, example_image

pytestmark = pytest.mark.bpy


@pytest.fixture(scope="module")
def chair(i2p, backend, tmp_path_factory):
    """The demo result and its mesh, made once for the module (the slow part)."""
    bpy = i2p
    bpy.ops.wm.read_factory_settings(use_empty=True)
    s = bpy.context.scene.image2points
    s.source, s.filepath = "FILE", str(example_image("chair.png"))
    s.output_dir = str(tmp_path_factory.mktemp("out"))
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    assert bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180) == {"FINISHED"}
    pts = bpy.context.active_object
    assert bpy.ops.image2points.make_mesh(endpoint=backend.endpoint, timeout=120) == {"FINISHED"}
    return pts, bpy.context.active_object


def world_verts(obj) -> np.ndarray:
    me = obj.data
    v = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", v)
    m = np.array(obj.matrix_world)
    return v.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def test_make_mesh_gives_one_coloured_watertight_mesh_beside_the_points(i2p, chair):
    bpy = i2p
    from image2points.backend.model.meshing import is_watertight

    pts, obj = chair
    meshes = [o for o in bpy.data.objects if "i2p_mesh_faces" in o]
    assert meshes == [obj] and obj.type == "MESH" and obj.name == f"{pts.name} Mesh"
    assert "i2p_point_count" not in obj  # not mistaken for a point object by the PLY/views code
    for key in ("i2p_source_image", "i2p_job", "i2p_frame", "i2p_model", "i2p_size_m"):
        assert obj[key] == pts[key]
    assert obj["i2p_source_object"] == pts.name and obj["i2p_mesh_watertight"]
    assert np.allclose(np.array(obj.matrix_world), np.array(pts.matrix_world))
    me = obj.data
    assert len(me.polygons) == obj["i2p_mesh_faces"] > 1000
    f = np.empty(len(me.polygons) * 3, np.int32)
    me.polygons.foreach_get("vertices", f)
    assert is_watertight(f.reshape(-1, 3))
    attr = me.color_attributes.get("Col")
    assert attr is not None and attr.data_type == "BYTE_COLOR" and attr.domain == "POINT"
    assert me.materials[0].name == "Image2Points Mesh"
    # the mesh sits on the cloud: every vertex near a point, in world space
    from scipy.spatial import cKDTree

    from image2points.addon import points

    wp, rgb = points.world_points(pts)
    d, i = cKDTree(wp).query(world_verts(obj))
    assert np.percentile(d, 95) < 0.1 * float(pts["i2p_size_m"])
    col = np.empty(len(me.vertices) * 4, np.float32)
    attr.data.foreach_get("color_srgb", col)
    got = np.round(col.reshape(-1, 4)[:, :3] * 255)
    assert np.abs(got - rgb[i]).mean() < 5.0  # the nearest points' colours


def test_make_mesh_is_one_undo_step_and_refuses_a_dead_backend(i2p, chair):
    bpy = i2p
    from image2points.addon import mesh

    assert mesh.IMAGE2POINTS_OT_make_mesh.bl_options >= {"REGISTER", "UNDO"}
    pts, _ = chair
    bpy.context.view_layer.objects.active = pts
    n = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="UNREACHABLE"):  # bpy.ops raises on an ERROR report
        bpy.ops.image2points.make_mesh(endpoint="tcp://127.0.0.1:1", connect_timeout=0.5, timeout=2)
    assert len(bpy.data.objects) == n
    assert i2p.context.window_manager.image2points.job.error_code == "UNREACHABLE"


def test_make_mesh_modal_path_ticks_to_a_mesh_and_cancels(i2p, chair, backend):
    """What invoke()/modal() do in the UI (timers never fire in the bpy module): begin, then ticks."""
    import time

    from opstub import OperatorStub

    from image2points.addon import mesh

    bpy = i2p
    pts, _ = chair
    bpy.context.view_layer.objects.active = pts
    pts.select_set(True)
    stub = OperatorStub(mesh.IMAGE2POINTS_OT_make_mesh, backend.endpoint, 120.0)
    n = len([o for o in bpy.data.objects if "i2p_mesh_faces" in o])
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}
    deadline = time.monotonic() + 120
    outcome = {"RUNNING_MODAL"}
    while outcome == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        outcome = stub.tick(bpy.context)
        time.sleep(0.02)
    assert outcome == {"FINISHED"}
    made = [o for o in bpy.data.objects if "i2p_mesh_faces" in o]
    assert len(made) == n + 1 and bpy.context.active_object in made
    assert any("made" in msg for _, msg in stub.reports)
    bpy.data.objects.remove(bpy.context.active_object)
    bpy.context.view_layer.objects.active = pts
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}
    stub._task.cancel_requested = True
    assert stub.tick(bpy.context) == {"CANCELLED"}
    assert len([o for o in bpy.data.objects if "i2p_mesh_faces" in o]) == n
    assert stub.reports[-1][0] == {"WARNING"}


def test_glb_export_reimports_with_the_same_vertices_and_bounds(i2p, chair, tmp_path):
    bpy = i2p
    from image2points.addon import mesh_export

    _, obj = chair
    path = str(tmp_path / "chair_mesh.glb")
    mesh_export.export_mesh(bpy.context, obj, path, "GLB")
    before = world_verts(obj)
    names = set(bpy.data.objects.keys())
    bpy.ops.import_scene.gltf(filepath=path)
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - names]
    assert len(new) == 1
    back = world_verts(new[0])
    assert len(back) == len(before)
    # glTF is +Y up in metres; Blender's importer turns it back to Z up
    assert np.allclose(back.min(0), before.min(0), atol=1e-4)
    assert np.allclose(back.max(0), before.max(0), atol=1e-4)
    assert len(new[0].data.color_attributes) >= 1  # COLOR_0 came along
    bpy.data.objects.remove(new[0])
    for fmt in ("PLY", "OBJ"):
        p = str(tmp_path / f"chair_mesh.{fmt.lower()}")
        mesh_export.export_mesh(bpy.context, obj, p, fmt)
        head = open(p, "rb").read(400)
        assert (b"property uchar red" in head) if fmt == "PLY" else head.startswith(b"# Blender")


def test_bake_texture_and_mark_as_asset_with_a_preview(i2p, chair):
    bpy = i2p
    from image2points.addon import mesh_export

    _, obj = chair
    bpy.context.view_layer.objects.active = obj
    img = mesh_export.bake_texture(bpy.context, obj, size=64)
    px = np.empty(64 * 64 * 4, np.float32)
    img.pixels.foreach_get(px)
    assert px.reshape(-1, 4)[:, :3].std() > 0.02  # colours, not a blank image
    assert obj.data.uv_layers.get("UVMap") is not None
    mat = obj.data.materials[0]
    assert any(n.bl_idname == "ShaderNodeTexImage" and n.image == img for n in mat.node_tree.nodes)
    assert bpy.ops.image2points.mark_asset() == {"FINISHED"}
    assert {"Image2Points", "mesh"} <= {t.name for t in obj.asset_data.tags}
    assert f"{obj['i2p_mesh_faces']} faces" in obj.asset_data.description
    assert tuple(obj.preview.image_size) == (128, 128)
    prev = np.empty(128 * 128 * 4, np.float32)
    obj.preview.image_pixels_float.foreach_get(prev)
    assert prev[3::4].mean() > 0.02  # the object is in the picture (transparent film elsewhere)


def test_panel_draws_with_a_mesh_selected(i2p, chair):
    from types import SimpleNamespace

    from image2points.addon import mesh

    _, obj = chair
    calls = []

    class Layout:
        def __getattr__(self, name):
            def f(*a, **k):
                calls.append(name)
                return self if name in ("row", "column", "box") else SimpleNamespace(format="")
            return f

    ctx = SimpleNamespace(scene=i2p.context.scene, selected_objects=[obj], active_object=obj)
    mesh._draw_mesh_panel(SimpleNamespace(layout=Layout()), ctx)
    assert "operator" in calls and "label" in calls


def test_batch_mesh_writes_the_glb(backend, tmp_path):
    out = tmp_path / "chair.blend"
    res = subprocess.run([sys.executable, "-m", "image2points.addon.batch", "--image", str(example_image("chair.png")),
                          "--out", str(out), "--endpoint", backend.endpoint, "--views", "0", "--mesh"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    glb = tmp_path / "chair_mesh.glb"
    assert glb.exists() and glb.read_bytes()[:4] == b"glTF"
    assert "meshed 'chair Mesh'" in res.stdout
