"""Framed novel views, and a Cycles render from the input's direction that shows the input."""

from __future__ import annotations

import numpy as np
import pytest

from image2points.addon.core import camera


def box_points(size, n=4000, seed=0):
    """Points on the surface of an axis-aligned box with edge lengths ``size`` (Blender axes)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.5, 0.5, (n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(p[np.arange(n), axis]) * 0.5
    return p * np.asarray(size, np.float64) + np.array([0.3, -0.2, 1.0])


@pytest.mark.parametrize("size", [(0.08, 0.08, 2.0), (2.0, 1.6, 0.05), (1.0, 1.0, 1.0)],
                         ids=["tall-thin", "wide-flat", "cube"])
@pytest.mark.parametrize("res", [(512, 512), (640, 360)])
def test_every_ring_view_frames_the_object(size, res):
    pts = box_points(size)
    centre = 0.5 * (pts.min(0) + pts.max(0))
    radius = float(np.linalg.norm(pts - centre, axis=1).max())
    for elev in (20.0, 60.0):
        for c2w in camera.ring_poses(4, camera.fit_radius(radius), elev, centre):
            m = camera.framed_pose(pts, c2w, 50.0, 36.0, *res)
            assert np.allclose(m[:3, :3], c2w[:3, :3])  # the view direction is kept
            fill, off = camera.projected_fill(pts, m, 50.0, 36.0, *res)
            assert 0.70 <= fill <= 0.85, (size, elev, fill)
            assert np.abs(off).max() < 0.02 * min(res)  # centred
            # nothing leaves the frame on the longer side either
            q = (pts - m[:3, 3]) @ m[:3, :3]
            f = 50.0 / 36.0 * res[0]
            u, v = f * q[:, 0] / -q[:, 2], f * q[:, 1] / -q[:, 2]
            assert np.abs(u).max() < res[0] / 2 and np.abs(v).max() < res[1] / 2


@pytest.mark.bpy
def test_cycles_render_from_the_input_direction_shows_the_input(bpy_scene):
    """Lift a banded image (hand-made model maps), import it, render it from the input camera with
    the add-on's settings (Standard view transform, "As photographed"): same colours, closed."""
    bpy = bpy_scene
    from scipy import ndimage

    from image2points.addon import points, render
    from image2points.backend.model import lift
    from tests.test_lift import disc_maps

    h, w = 60, 90
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - 30) ** 2 / 26 ** 2 + (xx - 45) ** 2 / 40 ** 2) < 1
    bands = np.array([[200, 60, 40], [70, 160, 90], [60, 80, 210]], np.uint8)
    img = np.zeros((h, w, 4), np.uint8)
    img[..., :3] = bands[np.minimum(xx // 30, 2)]
    img[..., 3] = mask * 255
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=12_000)
    view = info["view"]
    assert info["scale"] == 1.0
    size = 2.0
    obj = points.import_reconstruction("banded", xyz, col, size=size, radius=0.9 * view.a * size / 2)
    assert points.colour_mode() == "PHOTO"
    scene = bpy.context.scene
    render.configure_render(scene, "CYCLES", samples=8, resolution=w)
    scene.render.resolution_y = h
    scene.render.film_transparent = True
    assert scene.view_settings.view_transform == "Standard"
    render.ensure_lighting(scene)  # lights must not change "As photographed" colours
    # the input camera: orthographic, at -Y looking +Y, covering the working image exactly
    xc, yc = view.to_plane(np.array([w / 2]), np.array([h / 2]))
    c2w = camera.look_at(np.array([xc[0], -5.0, yc[0]]) * [size / 2, 1, size / 2],
                          np.array([xc[0] * size / 2, 0.0, yc[0] * size / 2]))
    cam = render.add_camera("input", c2w)
    cam.data.type = "ORTHO"
    cam.data.ortho_scale = w * view.a * size / 2
    scene.camera = cam
    out = str(bpy_scene.app.tempdir) + "/input_view.png"
    scene.render.filepath = out
    with render.quiet_stdout():
        bpy.ops.render.render(write_still=True)
    from image2points.addon.image_input import image_pixels_u8
    from image2points.addon.views import load_image

    px = image_pixels_u8(load_image(out))
    assert px.shape == (h, w, 4)
    covered = px[..., 3] > 127
    assert (covered & mask).sum() >= 0.98 * mask.sum()  # the surface renders closed
    inner = ndimage.binary_erosion(mask, iterations=2) & (np.abs((xx % 30) - 14.5) < 12)
    err = np.abs(px[inner, :3].astype(float) - img[inner, :3].astype(float)).mean() / 255
    assert err <= 0.05, err
    # "Lit" is the other look of the same shared material
    points.set_colour_mode("LIT")
    assert points.colour_mode() == "LIT"
    del obj


@pytest.mark.bpy
def test_panel_density_colour_mode_and_view_colours(tmp_path, capfd):
    bpy = pytest.importorskip("bpy", reason="needs the bpy wheel")
    from image2points import addon
    from image2points.addon import points, props, views

    addon.register()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        s = scene.image2points
        assert (s.density, s.colour_mode, s.view_resolution, s.view_colour) == (100_000, "PHOTO", 512, "STANDARD")
        xyz = box_points((1.0, 0.2, 0.6)).astype(np.float32)
        obj = points.import_reconstruction("box", xyz, np.full((len(xyz), 3), 200, np.uint8), radius=0.05)
        # the panel's switch restyles the shared material; the message bus that calls
        # colour_mode_changed never fires in the bpy module, so call it as Blender would
        s.colour_mode = "LIT"
        props.colour_mode_changed(bpy.context)
        assert points.colour_mode() == "LIT"
        s.colour_mode = "PHOTO"
        props.colour_mode_changed(bpy.context)
        assert points.colour_mode() == "PHOTO"
        scene.view_settings.view_transform = "AgX"
        s.view_count, s.view_resolution, s.view_samples, s.view_engine = 2, 32, 1, "CYCLES"
        s.output_dir = str(tmp_path) + "/"
        capfd.readouterr()
        paths = views.render_views(bpy.context, obj)
        assert len(paths) == 3
        assert scene.view_settings.view_transform == "AgX"  # the artist's choice is back
        lines = capfd.readouterr().out.splitlines()
        assert [ln.split(":")[0] for ln in lines if ln.startswith("view ")] == ["view 1/2", "view 2/2"]
        assert not any(ln.startswith("Fra:") for ln in lines)
    finally:
        addon.unregister()
