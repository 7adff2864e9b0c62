"""Renders of the result alone: everything else that renders is hidden, and given back even when
the render fails; what counts as being in the way when placing a new result."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.bpy


def test_only_renderable_hides_the_rest_and_restores_it_on_errors(bpy_scene):
    bpy = bpy_scene
    from image2points.addon import visibility

    bpy.ops.wm.read_factory_settings(use_empty=False)  # Cube, Light, Camera
    scene = bpy.context.scene
    keep = bpy.data.objects.new("result", bpy.data.meshes.new("result"))
    curve = bpy.data.objects.new("curve", bpy.data.curves.new("curve", "CURVE"))
    hidden = bpy.data.objects.new("hidden", bpy.data.meshes.new("hidden"))
    for obj in (keep, curve, hidden):
        scene.collection.objects.link(obj)
    hidden.hide_render = True
    cube, light = scene.objects["Cube"], scene.objects["Light"]
    with pytest.raises(RuntimeError, match="render failed"):
        with visibility.only_renderable(scene, keep):
            assert cube.hide_render and curve.hide_render and hidden.hide_render
            assert not keep.hide_render and not light.hide_render  # lights still light it
            raise RuntimeError("render failed")
    assert not cube.hide_render and not curve.hide_render and hidden.hide_render  # as they were
    boxes = visibility.visible_boxes(bpy.context, exclude=keep)
    assert len(boxes) == 3  # Cube, curve, hidden-for-render (still visible in the viewport)
    cube_min, cube_max = visibility.world_box(cube)
    assert list(cube_min) == pytest.approx([-1, -1, -1]) and list(cube_max) == pytest.approx([1, 1, 1])
