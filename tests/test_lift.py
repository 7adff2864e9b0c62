"""The input view is the picture: lifted silhouette, colours, density, carving (backend.model.lift)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from image2points.backend.model import geometry, lift, splat


def keyhole(h: int = 200, w: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGBA image of a keyhole (disc over a bar) with noisy colours on transparency, + its mask."""
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - 80) ** 2 + (xx - 140) ** 2 < 50 ** 2) | ((abs(xx - 140) < 18) & (yy > 80) & (yy < 180))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = np.concatenate([rgb, (mask * 255).astype(np.uint8)[..., None]], -1)
    img[~mask, :3] = 0
    return img, mask


def disc_maps(front_depth: float = 1.8, back_depth: float = 1.6, colour: float = 0.8):
    """Hand-made fixed-view maps: a disc seen from the front (+z) and from the back (-z)."""
    R, t = (x.numpy().astype(np.float64) for x in geometry.fixed_views(layout="axis"))
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 20 ** 2
    logit = np.full((6, 64, 64), -5.0, np.float32)
    depth = np.full((6, 1, 64, 64), 2.0, np.float32)
    logit[0][disc], logit[1][disc] = 5.0, 5.0
    depth[0, 0], depth[1, 0] = front_depth, back_depth
    rgb = np.full((6, 3, 64, 64), colour, np.float32)
    return depth, logit, rgb, R, t


def test_known_shape_projects_to_itself_with_its_own_colours():
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=60_000)
    assert info["scale"] == 1.0 and info["view"].shape == mask.shape  # full resolution
    vis = info["visible"]
    hit, pix = splat.render_input_view(xyz[:vis], col[:vis], info["view"], R[0], t[0])
    assert (hit == mask).all()  # the lifted silhouette is the mask, pixel for pixel
    assert (pix[mask] == img[mask][:, :3]).all()  # and each pixel keeps its sRGB bytes
    # the whole cloud: the same colours where the camera looks, nothing beyond the tolerance
    hit_all, pix_all = splat.render_input_view(xyz, col, info["view"], R[0], t[0])
    assert (pix_all[mask] == img[mask][:, :3]).all()
    assert (hit_all == mask).all()  # hidden points kept by the tolerance are snapped inside
    # the visible surface sits at the front depth (z = CAM_DIST - 1.8), the hidden one behind it;
    # along the outline (lift.RIM_BAND map pixels) the picture bends back toward the middle of the
    # front and the back (z = 1.6 - CAM_DIST), where a ray through the outline grazes the object
    front_z, back_z = geometry.CAM_DIST - 1.8, 1.6 - geometry.CAM_DIST
    mid = (front_z + back_z) / 2
    z = xyz[:vis, 2]
    assert ((z <= front_z + 1e-5) & (z >= mid - 1e-5)).all()
    view = info["view"]
    c, r = view.to_pixels(xyz[:vis, 0], xyz[:vis, 1], geometry.CAM_DIST - z)
    edge = ndimage.distance_transform_edt(mask)[np.floor(r).astype(int), np.floor(c).astype(int)]
    band = lift.RIM_BAND * (2 * geometry.ORTHO_S / 64) / view.a  # in pixels of the image
    f = -(-max(mask.shape) // lift.RIM_GRID)  # rim_weight measures on f x f blocks: up to 2f px nearer
    assert band > 2 and np.allclose(z[edge > band + 2 * f], front_z, atol=1e-5)
    rim, inner = z[edge <= 1.5], z[(edge > 1.5) & (edge <= band / 2)]
    assert np.abs(rim - mid).mean() < 0.3 * (front_z - mid)  # the outline: nearly halfway back
    assert rim.mean() < inner.mean() < front_z - 0.01  # bending back steadily toward it
    assert info["hidden"] > 0 and (xyz[vis:, 2] < 0.2 - lift.FRONT_TOL).all()


def test_the_unseen_side_bends_along_its_views_outlines_too(monkeypatch):
    """The back view's map, like the picture, puts its outline on its own front (z = -0.4 here);
    its outermost cells move toward the middle of front and back (lift.HIDDEN_RIM), the rest stays."""
    monkeypatch.setattr(lift, "MIRROR", False)  # the model's own unseen side only
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=60_000)
    hid = xyz[info["visible"]:].astype(np.float64)
    back_z, mid = 1.6 - geometry.CAM_DIST, (1.6 - 1.8) / 2
    rad = np.hypot(hid[:, 0], hid[:, 1]) / (2 * geometry.ORTHO_S / 64)  # map pixels from the disc's centre
    z = hid[:, 2]
    assert ((z >= back_z - 1e-5) & (z <= mid + 1e-5)).all()
    assert np.median(z[rad < 18]) == pytest.approx(back_z, abs=1e-5)  # the disc of radius 20 inside
    assert (np.abs(z[rad < 18] - back_z) < 1e-3).mean() > 0.99
    ring = z[rad > 19.5]  # its outermost cells
    assert len(ring) > 200 and ring.mean() > back_z + 0.1


def test_hidden_colours_are_toned_like_the_visible_ones(monkeypatch):
    monkeypatch.setattr(lift, "HIDDEN_COLOUR", "model")  # the model's own colours, toned
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps(colour=0.95)  # the model's albedo: brighter than the photo
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=30_000)
    vis = info["visible"]
    assert abs(col[vis:].mean() - col[:vis].mean()) < 3.0


def test_model_points_in_front_of_the_picture_are_dropped():
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps(back_depth=3.7)  # a "back" surface in front (z = 1.7)
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=20_000)
    assert info["hidden"] == 0 and len(xyz) == 20_000  # the density goes to the visible side


def test_other_views_points_on_the_lifted_surface_carry_their_pixels_colours():
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps(colour=0.1)
    card = 2 * geometry.CAM_DIST - 1.8  # the back view's left half lies on the front surface
    depth[1, 0, :, :32] = card
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=30_000)
    vis = info["visible"]
    hid, hcol = xyz[vis:].astype(np.float64), col[vis:]
    on = np.abs(hid[:, 2] - (geometry.CAM_DIST - 1.8)) < lift.FRONT_TOL
    assert on.sum() > 1000 and (~on).sum() > 1000  # kept on the surface, and behind it
    cam = hid[on] @ R[0].T + t[0]
    c, r = info["view"].to_pixels(cam[:, 0], cam[:, 1], -cam[:, 2])
    under = img[np.floor(r).astype(int), np.floor(c).astype(int), :3]
    assert (hcol[on] == under).all(axis=1).mean() > 0.99  # the picture's colour, not the model's
    assert np.abs(hcol[~on].astype(float) - 0.1 * 255).mean() > 20  # behind: not the model's dark grey


def test_hidden_points_take_the_picture_colours_where_they_project():
    img, mask = keyhole()
    left = mask & (np.arange(img.shape[1]) < 140)[None]
    img[left, :3] = (200, 40, 40)
    img[mask & ~left, :3] = (40, 40, 200)
    depth, logit, rgb, R, t = disc_maps(colour=0.1)  # the model's dark grey: a hue the picture lacks
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=30_000)
    vis = info["visible"]
    cam = xyz[vis:].astype(np.float64) @ R[0].T + t[0]
    c, _ = info["view"].to_pixels(cam[:, 0], cam[:, 1], -cam[:, 2])
    red, blue = (col[vis:] == (200, 40, 40)).all(1), (col[vis:] == (40, 40, 200)).all(1)
    assert info["hidden"] > 5000 and (red | blue).mean() > 0.9
    hc = col[vis:].astype(int)  # the rest blend the two across the seam: no model grey anywhere
    assert (hc[:, 1] == 40).all() and (np.abs(hc[:, 0] + hc[:, 2] - 240) <= 2).all()
    away = np.abs(c - 140) > 12  # off the seam, each side takes the colour in front of it
    assert (red[away] == (c[away] < 140)).mean() > 0.99


def test_picture_is_lifted_on_the_front_maps_own_depth_not_a_nearer_view(monkeypatch):
    monkeypatch.setattr(lift, "RIM_BAND", 0.0)  # the outline's bend is test_known_shape_...'s
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps(colour=0.1)
    front_z = geometry.CAM_DIST - 1.8
    depth[1, 0, :, :32] = 2 * geometry.CAM_DIST - 1.8 + 0.15  # back view's left half: 0.15 nearer
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=30_000)
    vis = info["visible"]
    assert np.allclose(xyz[:vis, 2], front_z, atol=1e-5)  # the front map's own estimate
    hid, hcol = xyz[vis:].astype(np.float64), col[vis:]
    seen = np.abs(hid[:, 2] - (front_z + 0.15)) < 0.02  # the nearer view's points, within the band
    assert seen.sum() > 1000
    cam = hid[seen] @ R[0].T + t[0]
    c, r = info["view"].to_pixels(cam[:, 0], cam[:, 1], -cam[:, 2])
    under = img[np.floor(r).astype(int), np.floor(c).astype(int), :3]
    assert (hcol[seen] == under).all(axis=1).mean() > 0.99  # seen by the camera: the picture's colour
    hit, pix = splat.render_input_view(xyz, col, info["view"], R[0], t[0])
    assert (hit == mask).all() and (pix[mask] == img[mask][:, :3]).all()  # still the picture


@pytest.mark.parametrize("density", [10_000, 37_000, 250_000])
def test_density_is_exact_with_hand_made_maps(density):
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=density)
    assert len(xyz) == len(col) == density
    assert info["visible"] + info["hidden"] == density


def test_small_density_downscales_and_keeps_the_silhouette():
    img, mask = keyhole()
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=10_000)
    assert info["scale"] < 1.0
    wrgb, wmask = lift.working_image(img, mask.astype(np.float32), info["scale"])
    hit, pix = splat.render_input_view(xyz[:info["visible"]], col[:info["visible"]], info["view"], R[0], t[0])
    assert (hit == wmask).all() and (pix[wmask] == wrgb[wmask]).all()


def test_a_photos_outline_loses_the_backdrop_colour():
    """A red disc shot on white, cut by a hard mask one pixel too generous: the outline pixels
    that are mostly backdrop take the disc's colour; every pixel inside keeps its bytes."""
    from scipy import ndimage

    h = w = 160
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 79.5, xx - 79.5)
    cover = np.clip(50.5 - r, 0, 1)  # anti-aliased edge
    red, white = np.array([200, 30, 40], float), np.array([245, 245, 240], float)
    img = np.round(cover[..., None] * red + (1 - cover[..., None]) * white).astype(np.uint8)
    mask = r < 51.5  # a hard cut that takes in a ring of backdrop-coloured pixels
    assert lift.is_photo(img) and lift.is_photo(np.dstack([img, np.full((h, w), 255, np.uint8)]))
    fixed = lift.unmixed_outline(img, mask)
    whitish = (fixed[mask].astype(int).min(1) > 150)
    assert (img[mask].astype(int).min(1) > 150).sum() > 100 and whitish.sum() == 0
    inner = ndimage.binary_erosion(mask, iterations=lift.OUTLINE_PX)
    assert (fixed[inner] == img[inner]).all()
    # through the lift: no lifted point carries the backdrop's colour
    depth, logit, rgb, R, t = disc_maps()
    xyz, col, info = lift.lift(img, mask.astype(np.float32), depth, logit, rgb, R, t, density=30_000)
    assert (col[:info["visible"]].astype(int).min(1) > 150).sum() == 0


def test_default_density():
    assert lift.default_density(256, 256) == 100_000
    assert lift.default_density(2000, 1000) == 100_000
    assert lift.default_density(128, 100) == 25_000
    assert lift.default_density(30, 30) == lift.MIN_DENSITY


# -- with the shipped model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def recon():
    import torch

    from image2points.backend.model.reconstruct import Reconstructor

    torch.set_num_threads(1)
    return Reconstructor.load()


def star(size: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    ang, r = np.arctan2(yy, xx), np.hypot(yy, xx)
    mask = r < size * (0.22 + 0.12 * np.cos(5 * ang))
    img = np.zeros((size, size, 4), np.uint8)
    img[mask] = (150, 90, 200, 255)
    img[mask & (yy > 0)] = (60, 170, 60, 255)
    return img


@pytest.mark.parametrize("density", [10_000, 100_000, 400_000])
def test_model_cloud_density_within_5_percent(recon, density):
    cloud = recon.reconstruct([star()], density=density)[0]
    assert abs(len(cloud.xyz) - density) <= 0.05 * density
    assert cloud.xyz.dtype == np.float32 and np.isfinite(cloud.xyz).all()


def test_model_cloud_seen_from_the_input_is_the_input(recon):
    img = star()
    mask = img[..., 3] > 127
    cloud = recon.reconstruct([img])[0]
    assert len(cloud.xyz) == 100_000  # the default for a 256 px image
    R, t = recon.R.numpy(), recon.t.numpy()
    view = cloud.meta["input_view"]
    assert view.shape == mask.shape
    vis = cloud.meta["visible"]
    hit, pix = splat.render_input_view(cloud.xyz[:vis], cloud.rgb[:vis], view, R[0], t[0])
    assert (hit == mask).all()
    hit, pix = splat.render_input_view(cloud.xyz, cloud.rgb, view, R[0], t[0])
    s = splat.input_view_scores(hit, pix, mask, img[..., :3])
    assert s["iou"] >= 0.99 and s["colour_mae"] <= 3.0
    # the hidden side is not brighter than the picture
    assert cloud.rgb[vis:].mean() <= cloud.rgb[:vis].mean() + 8
    # the frame: still about the unit ball
    assert 0.7 < np.linalg.norm(cloud.xyz, axis=1).max() < 1.3
    plain = recon.reconstruct([img], lift=False)[0]  # the model's own cloud: no input view
    assert 0 < len(plain.xyz) < len(cloud.xyz) and "input_view" not in plain.meta


def test_a_part_the_model_missed_does_not_drag_the_picture_off_its_surface():
    """A table seen from the front: the picture has the top and a leg, the model's front mask only
    a thick top (it missed the leg). Matching centroids would lift the picture's top 0.2 above the
    model's; with the frame's own rule (the object's box centre is the origin) as a second
    candidate, scored by overlap, it lands on it."""
    s = geometry.ORTHO_S
    n, a_true = 160, 0.01
    col, row = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = a_true * col - 0.8, 0.8 - a_true * row  # the object's box is centred on the origin
    top = (np.abs(x) <= 0.6) & (y >= 0.35) & (y <= 0.5)
    mask = top | ((np.abs(x) <= 0.1) & (y >= -0.5) & (y < 0.35))
    f = ((np.arange(64) + 0.5) / 64 * 2 - 1) * s
    fx, fy = np.meshgrid(f, -f)
    front = (np.abs(fx) <= 0.6) & (fy >= 0.2) & (fy <= 0.55)  # the model's top, no leg
    view = lift.fit_input_view(mask, front, np.full((64, 64), geometry.CAM_DIST, np.float32))
    r, c = np.nonzero(top)
    _, ty = view.to_plane(c + 0.5, r + 0.5)
    assert abs(ty.mean() - 0.425) < 0.07  # the true top's height (centroids alone: 0.645)


def test_dilate_square_is_the_maximum_filter():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for shape in ((64, 80), (5, 200), (1, 7)):
        for r in (1, 2, 4):
            m = rng.random(shape) < 0.05
            assert np.array_equal(lift.dilate_square(m, r), ndimage.maximum_filter(m, size=2 * r + 1))


def test_points_kept_by_the_tolerance_are_snapped_into_the_mask():
    """The carving keeps model points up to CARVE_TOL_PX outside the mask; each is moved onto the
    nearest mask pixel at its depth, so the input-view silhouette stays the mask's own."""
    R, t = (x.numpy().astype(np.float64) for x in geometry.fixed_views(layout="axis"))
    f = int(np.argmax(R[:, 2, 2]))
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    view = lift.InputView(0.02, -0.6, 0.6, mask.shape)
    col = np.array([19.5, 40.5, 30.2, 41.7, 18.4, 41.3])  # pixels 1 and 2 outside, all sides
    row = np.array([30.0, 25.0, 41.6, 41.5, 18.6, 18.9])
    d = np.full(len(col), geometry.CAM_DIST)
    x, y = view.to_plane(col, row, d)
    p = lift.to_world(x, y, d, R[f], t[f])
    q = lift.snap_inside(p, view, mask, R[f], t[f])
    cam = lift.matmul(q.astype(np.float64), R[f].T, t[f])
    c, r = view.to_pixels(cam[:, 0], cam[:, 1], -cam[:, 2])
    assert lift.CARVE_TOL_PX >= 2
    assert mask[np.floor(r).astype(int), np.floor(c).astype(int)].all()
    assert np.abs(cam[:, 2] + geometry.CAM_DIST).max() < 1e-6  # at their depth
    assert np.hypot(c - col, r - row).max() < 2.9  # by whole pixels, at most the tolerance
