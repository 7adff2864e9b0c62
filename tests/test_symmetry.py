"""The mirror plane (backend.model.symmetry) and the mirrored unseen side it gives the lift."""

from __future__ import annotations

import math

import numpy as np

from image2points.backend.data.render import view_rotation as camera  # object (z up) -> camera
from image2points.backend.model import geometry, lift, splat, symmetry


def box(lo, hi, n, rng):
    return rng.uniform(lo, hi, (n, 3))


def chair(rng: np.random.Generator) -> np.ndarray:
    """Points of a chair in its own frame (z up): mirror-symmetric across x = 0 only (the back
    rest is at -y, so front and back differ; the seat is wider than deep)."""
    parts = [box((-0.5, -0.4, 0.0), (0.5, 0.4, 0.1), 3000, rng),       # seat
             box((-0.5, -0.4, 0.1), (0.5, -0.3, 0.9), 2000, rng)]      # back rest
    for x in (-0.45, 0.4):
        for y in (-0.35, 0.3):
            parts.append(box((x, y, -0.8), (x + 0.05, y + 0.05, 0.0), 300, rng))  # legs
    p = np.concatenate(parts)
    return p - np.array([0.0, 0.0, 0.05])


def test_reflect_is_an_involution_and_batches_planes():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    n = np.array([0.6, 0.0, 0.8])
    assert np.allclose(symmetry.reflect(symmetry.reflect(p, n, 0.3), n, 0.3), p)
    on = p - (p @ n - 0.3)[:, None] * n  # points on the plane stay
    assert np.allclose(symmetry.reflect(on, n, 0.3), on)
    ns = np.stack([n, [1.0, 0.0, 0.0]])
    many = symmetry.reflect(p, ns, np.array([0.3, -0.1]))
    assert many.shape == (50, 2, 3)
    assert np.allclose(many[:, 1], symmetry.reflect(p, ns[1], -0.1))


def test_the_mirror_plane_of_an_upright_object_is_found_from_any_side():
    rng = np.random.default_rng(1)
    obj = chair(rng)
    for azim, elev in ((30.0, 20.0), (200.0, 40.0), (115.0, -5.0)):
        R = camera(azim, elev)
        p = obj @ R.T
        plane = symmetry.find_plane(p, p[:2000], lambda q: np.zeros(q.shape[:-1], bool), rng)
        true_n = R @ np.array([1.0, 0.0, 0.0])  # the object's x axis in the camera frame
        angle = math.degrees(math.acos(min(1.0, abs(float(plane.n @ true_n)))))
        assert angle < 6.0, (azim, elev, angle)
        assert abs(abs(plane.d)) < 0.05
        assert plane.cost < symmetry.MAX_COST


def test_the_picture_decides_between_two_symmetries():
    """A plain box has two vertical mirror planes; the one whose reflection the picture rules
    out (here: every visible point's image across it) loses."""
    rng = np.random.default_rng(2)
    R = camera(60.0, 25.0)
    p = box((-0.6, -0.3, -0.4), (0.6, 0.3, 0.4), 6000, rng) @ R.T
    n_x, n_y = R @ np.array([1.0, 0.0, 0.0]), R @ np.array([0.0, 1.0, 0.0])
    vis = p[p @ n_x > 0.1]

    def rules_out(q: np.ndarray) -> np.ndarray:
        return q @ n_x < -0.05  # nothing is seen on the far side of the x plane

    plane = symmetry.find_plane(p, vis, rules_out, rng)
    assert abs(float(plane.n @ n_y)) > 0.99  # the other plane
    free = symmetry.find_plane(p, vis, lambda q: np.zeros(q.shape[:-1], bool), rng)
    assert free.violation == 0.0 and plane.violation < 0.05


def slab_maps():
    """Fixed-view maps of a slab seen from the front (z = 0.2) and the back (z = -0.4)."""
    R, t = (x.numpy().astype(np.float64) for x in geometry.fixed_views(layout="axis"))
    yy, xx = np.mgrid[:64, :64]
    slab = (abs(yy - 31.5) < 22) & (abs(xx - 31.5) < 26)
    logit = np.full((6, 64, 64), -5.0, np.float32)
    depth = np.full((6, 1, 64, 64), 2.0, np.float32)
    logit[0][slab], logit[1][slab] = 5.0, 5.0
    depth[0, 0], depth[1, 0] = 1.8, 1.6
    return depth, logit, np.full((6, 3, 64, 64), 0.5, np.float32), R, t


def test_the_lift_mirrors_the_picture_onto_the_unseen_side_and_keeps_the_silhouette(monkeypatch):
    h, w = 180, 240
    yy, xx = np.mgrid[:h, :w]
    mask = (abs(yy - 90) < 60) & (abs(xx - 120) < 80) & ~((yy < 70) & (xx > 150))  # a notched slab
    rgb = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = np.concatenate([rgb, (mask * 255).astype(np.uint8)[..., None]], -1)
    depth, logit, mrgb, R, t = slab_maps()
    monkeypatch.setattr(lift, "RIM_BAND", 0.0)  # the slab's faces flat to their outlines: the mirror of
    monkeypatch.setattr(lift, "HIDDEN_RIM", 0.0)  # the front is the back, and the back is where it was
    monkeypatch.setattr(lift, "MIRROR", False)
    plain, plain_col, plain_info = lift.lift(img, mask.astype(np.float32), depth, logit, mrgb, R, t, 40_000)
    monkeypatch.setattr(lift, "MIRROR", True)
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, mrgb, R, t, 40_000)
    assert len(xyz) == len(plain) == 40_000
    vis = info["visible"]
    assert vis == plain_info["visible"] and np.array_equal(xyz[:vis], plain[:vis])  # the picture as before
    plane = info["mirror"]
    assert plane is not None and abs(plane.n[2]) > 0.98  # front and back: the slab's mid-plane
    # mirrored points: on the back surface, each in the colour of the pixel it mirrors, which for
    # this plane is (within the plane's precision, a pixel or two) the pixel it projects to; the
    # model's points get the picture's colours by the coarse look-up of ``picture_colours``
    def near_own_pixel(p, c):
        u, v = info["view"].to_pixels(p[:, 0], p[:, 1], geometry.CAM_DIST - p[:, 2])
        hit = np.zeros(len(p), bool)
        for dv in range(-2, 3):
            for du in range(-2, 3):
                px = img[np.clip(v.astype(int) + dv, 0, h - 1), np.clip(u.astype(int) + du, 0, w - 1), :3]
                hit |= (px == c).all(1)
        return hit
    mirrored = near_own_pixel(xyz[vis:], col[vis:])
    before = near_own_pixel(plain[vis:], plain_col[vis:])
    gain = mirrored.mean() - before.mean()
    assert before.mean() < 0.12 and 0.15 < gain < 0.4, (before.mean(), mirrored.mean())
    z = xyz[vis:][mirrored, 2]  # the plane is found to a degree and 0.02 (its grid): the edges tilt
    assert abs(np.median(z) + 0.4) < 0.02 and np.allclose(z, -0.4, atol=0.07)
    # the input view is still the picture: the silhouette is the mask, pixel for pixel
    hit, pix = splat.render_input_view(xyz, col, info["view"], R[0], t[0])
    assert (hit == mask).all() and (pix[mask] == img[mask][:, :3]).all()
