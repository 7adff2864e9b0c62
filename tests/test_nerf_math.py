"""Pure-function checks of the NeRF pieces: rays (against Blender's projection), encoding,
sampling, and volume-rendering identities with closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from image2points.addon.core.nerf_capture import Intrinsics
from image2points.addon.core.transforms import intrinsics_from_doc
from image2points.backend.nerf.encoding import encoded_dim, positional_encoding
from image2points.backend.nerf.rays import camera_rays, ray_aabb, rays_through_pixels
from image2points.backend.nerf.rendering import composite, median_depth, volume_weights
from image2points.backend.nerf.sampling import fixed_step, stratified


def _dist_point_ray(p: np.ndarray, o: np.ndarray, d: np.ndarray) -> float:
    v = p - o
    return float(np.linalg.norm(v - np.dot(v, d) * d))


@pytest.mark.bpy
def test_rays_match_blender_projection() -> None:
    bpy = pytest.importorskip("bpy")
    import mathutils
    from bpy_extras.object_utils import world_to_camera_view

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 120, 80, 100
    cam_data = bpy.data.cameras.new("c")
    cam_data.lens, cam_data.sensor_width = 35.0, 36.0
    cam = bpy.data.objects.new("c", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    rng = np.random.default_rng(0)
    cam.matrix_world = (mathutils.Matrix.Translation((1.5, -3.0, 2.0))
                        @ mathutils.Euler((1.1, 0.2, 0.4)).to_matrix().to_4x4())
    bpy.context.view_layer.update()
    c2w = np.array(cam.matrix_world, dtype=np.float64)
    intr = intrinsics_from_doc({"camera_angle_x": cam_data.angle_x}, (120, 80))
    assert intr.fl_x == pytest.approx(cam_data.lens / cam_data.sensor_width * 120, rel=1e-6)
    for _ in range(50):
        # a point in front of the camera
        p_cam = np.array([rng.uniform(-1, 1), rng.uniform(-0.6, 0.6), -rng.uniform(1.0, 6.0)])
        p = (c2w @ np.append(p_cam, 1.0))[:3]
        ndc = world_to_camera_view(scene, cam, mathutils.Vector(p.tolist()))
        u, v = ndc.x * 120, (1.0 - ndc.y) * 80
        o, d = rays_through_pixels(torch.tensor(c2w, dtype=torch.float32), intr,
                                   torch.tensor(u, dtype=torch.float32), torch.tensor(v, dtype=torch.float32))
        assert _dist_point_ray(p, o.double().numpy(), d.double().numpy()) < 1e-4 * np.linalg.norm(p_cam)
        assert float((torch.tensor(p) - o.double()) @ d.double()) == pytest.approx(np.linalg.norm(p - c2w[:3, 3]), rel=1e-5)


def test_camera_rays_use_pixel_centres_and_look_down_minus_z() -> None:
    intr = Intrinsics(w=32, h=24, fl_x=50.0, fl_y=50.0, cx=16.0, cy=12.0)
    c2w = torch.eye(4)
    o, d = camera_rays(c2w, intr)
    assert o.shape == d.shape == (24, 32, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(24, 32))
    # pixels (15, 11) and (16, 12) straddle the principal point symmetrically
    assert torch.allclose(d[11, 15, :2], -d[12, 16, :2], atol=1e-6)
    assert float(d[11, 15, 2]) < 0 and float(d[11, 15, 1]) > 0  # top rows look up (+Y)
    o2, d2 = rays_through_pixels(c2w, intr, torch.tensor(3.5), torch.tensor(7.5))
    assert torch.allclose(d2, d[7, 3])


def test_ray_aabb() -> None:
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    o = torch.tensor([[0.0, 0.0, 5.0], [3.0, 3.0, 5.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tmin, tmax, hit = ray_aabb(o, d, box)
    assert hit.tolist() == [True, False, True]
    assert tmin[0] == pytest.approx(4.0) and tmax[0] == pytest.approx(6.0)
    assert tmin[2] == pytest.approx(0.0) and tmax[2] == pytest.approx(1.0)


def test_positional_encoding_matches_seed_layout() -> None:
    x = torch.tensor([[0.3, -0.2, 0.5]])
    e = positional_encoding(x, 16)
    assert e.shape[-1] == encoded_dim(3, 16) == 99
    assert torch.allclose(e[0, :3], x[0])
    assert torch.allclose(e[0, 3:6], torch.sin(x[0])) and torch.allclose(e[0, 6:9], torch.cos(x[0]))
    assert torch.allclose(e[0, -3:], torch.cos(x[0] * 2.0 ** 15))


def test_stratified_samples_stay_in_their_bins() -> None:
    near, far = torch.tensor([2.0, 1.0]), torch.tensor([6.0, 3.0])
    t, delta = stratified(near, far, 8, jitter=True, generator=torch.Generator().manual_seed(0))
    assert t.shape == (2, 8)
    bins = (t - near[:, None]) / (far - near)[:, None] * 8
    assert torch.all(bins.floor() == torch.arange(8.0))
    assert torch.all(torch.diff(t, dim=-1) > 0)
    assert torch.allclose(t[:, 0] + delta.sum(-1), far)
    tc, _ = stratified(near, far, 4, jitter=False)
    assert torch.allclose(tc[0], torch.tensor([2.5, 3.5, 4.5, 5.5]))
    t2, d2, valid = fixed_step(near, far, 0.5, 10, jitter=False)
    assert torch.all(t2[valid] < far.repeat_interleave(valid.sum(1)))
    assert valid.sum(1).tolist() == [8, 4]


def test_weights_sum_to_accumulated_opacity() -> None:
    g = torch.Generator().manual_seed(1)
    sigma = torch.rand(64, 32, generator=g) * 5
    delta = torch.rand(64, 32, generator=g) * 0.1
    w, trans, alpha = volume_weights(sigma, delta)
    out = composite(w, torch.rand(64, 32, 3, generator=g), torch.cumsum(delta, -1), background=1.0)
    assert torch.allclose(w.sum(-1), out["acc"], atol=1e-6)
    # acc = 1 - transmittance after the last sample = 1 - exp(-sum sigma delta)
    assert torch.allclose(out["acc"], 1 - torch.exp(-(sigma * delta).sum(-1)), atol=1e-5)
    assert torch.allclose(trans[:, 0], torch.ones(64))
    assert bool(torch.all(w >= 0)) and bool(torch.all(out["acc"] <= 1 + 1e-6))


@pytest.mark.parametrize("sigma", [0.5, 3.0, 40.0])
def test_constant_slab_gives_closed_form_opacity_and_depth(sigma: float) -> None:
    """Density sigma on [a, b], zero elsewhere: acc = 1 - e^{-sigma L};
    E[t] = a(1-e^{-sL}) + (1-e^{-sL})/s - L e^{-sL} (unnormalised expected depth)."""
    a, b, n = 2.0, 3.5, 20000
    t = torch.linspace(0.0, 6.0, n + 1, dtype=torch.float64)[:-1]
    delta = torch.full_like(t, 6.0 / n)
    dens = torch.where((t >= a) & (t < b), torch.tensor(sigma, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    w, _, _ = volume_weights(dens[None], delta[None])
    out = composite(w, torch.zeros(1, n, 3, dtype=torch.float64), t[None])
    L = b - a
    e = math.exp(-sigma * L)
    assert float(out["acc"][0]) == pytest.approx(1 - e, abs=1e-9)
    # samples sit at interval starts: shift by half a step to compare with the integral
    depth = float(out["depth"][0]) + 0.5 * 6.0 / n * (1 - e)
    assert depth == pytest.approx(a * (1 - e) + (1 - e) / sigma - L * e, rel=2e-3)
    # white background shows through exactly by the transmittance
    out_w = composite(w, torch.zeros(1, n, 3, dtype=torch.float64), t[None], background=1.0)
    assert float(out_w["rgb"][0, 0]) == pytest.approx(e, abs=1e-9)


def test_step_density_median_depth() -> None:
    """An opaque wall at t=4 (huge density after it): depth and median are the wall."""
    t = torch.linspace(0.0, 8.0, 801)[None, :-1]
    delta = torch.full_like(t, 0.01)
    dens = torch.where(t >= 4.0, torch.tensor(1e4), torch.tensor(0.0))
    w, _, _ = volume_weights(dens, delta)
    out = composite(w, torch.zeros(1, 800, 3), t)
    assert float(out["acc"][0]) == pytest.approx(1.0, abs=1e-6)
    assert float(out["depth"][0]) == pytest.approx(4.0, abs=0.011)
    assert float(median_depth(w, t)[0]) == pytest.approx(4.0, abs=0.011)
