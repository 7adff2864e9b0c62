"""The importer on the real bpy wheel: data, attribute, modifier, material, render."""

from __future__ import annotations

import numpy as np
import pytest

from image2points.addon.core import camera as cameras

pytestmark = pytest.mark.bpy


def torus(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, (2, n))
    xyz = np.stack([(0.7 + 0.25 * np.cos(v)) * np.cos(u), (0.7 + 0.25 * np.cos(v)) * np.sin(u),
                    0.25 * np.sin(v)], 1).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return xyz, rgb


def test_import_points_exactly(bpy_scene):
    from image2points.addon import points

    xyz, rgb = torus()
    obj = points.create_point_object("cloud", xyz, rgb, radius=0.02, provenance={"job": "j"})
    assert len(obj.data.vertices) == len(xyz)
    back_xyz, back_rgb = points.point_arrays(obj)
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_rgb, rgb)  # sRGB -> linear -> sRGB is lossless at 8 bit
    attr = obj.data.color_attributes[points.COLOR_ATTR]
    assert attr.domain == "POINT" and attr.data_type == "FLOAT_COLOR"
    mod = obj.modifiers[points.MODIFIER]
    assert mod.type == "NODES" and mod.node_group.name == points.NODE_GROUP
    node_types = {n.bl_idname for n in mod.node_group.nodes}
    assert "GeometryNodeMeshToPoints" in node_types
    assert obj.data.materials[0].name == points.MATERIAL
    assert obj["i2p_job"] == "j" and obj["i2p_point_count"] == len(xyz)
    # the evaluated object is a point cloud with every point and the colour attribute
    dg = bpy_scene.context.evaluated_depsgraph_get()
    clouds = [i.object.data for i in dg.object_instances
              if i.object.type == "POINTCLOUD" and i.object.name == obj.name]
    assert len(clouds) == 1 and len(clouds[0].points) == len(xyz)
    assert points.COLOR_ATTR in {a.name for a in clouds[0].attributes}


def test_shared_node_group_and_material(bpy_scene):
    from image2points.addon import points

    a = points.create_point_object("a", *torus(100))
    b = points.create_point_object("b", *torus(100, 1))
    assert a.modifiers[0].node_group == b.modifiers[0].node_group
    assert a.data.materials[0] == b.data.materials[0]
    assert len([g for g in bpy_scene.data.node_groups if g.name.startswith(points.NODE_GROUP)]) == 1


def test_radius_input_drives_geometry_nodes(bpy_scene):
    from image2points.addon import points

    obj = points.create_point_object("r", *torus(100), radius=0.05)
    mod = obj.modifiers[points.MODIFIER]
    assert mod[points._socket_id(mod, "Radius")] == pytest.approx(0.05)
    points.set_radius(obj, 0.2)
    assert mod[points._socket_id(mod, "Radius")] == pytest.approx(0.2)


def test_import_reconstruction_places_upright(bpy_scene):
    from image2points.addon import points

    xyz = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], np.float32)  # up, away from camera, right
    obj = points.import_reconstruction("p", xyz, np.zeros((3, 3), np.uint8), size=4.0,
                                       location=(1, 2, 3))
    w, _ = points.world_points(obj)
    np.testing.assert_allclose(w, [[1, 2, 5], [1, 4, 3], [3, 2, 3]], atol=1e-6)
    assert obj["i2p_frame"].startswith(cameras.VIEWER_FRAME)


def test_render_shows_the_points(bpy_scene, tmp_path):
    from PIL import Image

    from image2points.addon import points, render

    xyz, rgb = torus(20000)
    rgb[:] = (255, 0, 0)
    obj = points.create_point_object("t", xyz, rgb, radius=0.03)
    scene = bpy_scene.context.scene
    render.configure_render(scene, "CYCLES", samples=4, resolution=64)
    render.ensure_lighting(scene)
    paths = render.render_ring(obj, str(tmp_path), "t", count=2)
    assert len(paths) == 2
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB")).astype(int)
        red = (img[..., 0] > img[..., 1] + 60) & (img[..., 0] > img[..., 2] + 60)
        assert red.mean() > 0.05, f"{p}: the red torus should cover part of the frame"
        assert red.mean() < 0.9
