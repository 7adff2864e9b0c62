"""The geometry core against ground truth from the ray-cast renderer: fuse3d, render_depth, grads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from image2points.backend.data.dataset import MakeConfig, make_samples
from image2points.backend.model import geometry

PIXEL = 2 * geometry.ORTHO_S / 64  # size of one fixed-view pixel in the unit-ball frame


@pytest.fixture(scope="module", params=sorted(geometry.LAYOUTS))
def sample(request):
    return make_samples(2_000_123, MakeConfig(views=1, novel=2, surf_points=20000, layout=request.param))


def _views(sample):
    layout = str(sample["layout"])
    return geometry.fixed_views(layout=layout)


def test_fixed_views_are_cube_corners_looking_at_origin():
    R, t = geometry.fixed_views(8)
    assert R.shape == (8, 3, 3) and t.shape == (8, 3)
    for Ri, ti in zip(R.double(), t.double()):
        torch.testing.assert_close(Ri @ Ri.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
        eye = -Ri.T @ ti
        assert eye.norm().item() == pytest.approx(geometry.CAM_DIST, rel=1e-5)
        assert torch.allclose(eye.abs(), torch.full((3,), geometry.CAM_DIST / 3 ** 0.5,
                                                    dtype=torch.float64), atol=1e-5)
        # the camera's -z axis points at the origin
        torch.testing.assert_close(-Ri[2], -eye / eye.norm(), atol=1e-6, rtol=0)


def test_axis_views_put_the_front_view_on_the_input_camera():
    R, t = geometry.fixed_views(6, layout="axis")
    torch.testing.assert_close(R[0], torch.eye(3))  # the input camera's own axes, at +z
    eyes = torch.einsum("nji,nj->ni", R, -t)  # camera centres -R^T t
    want = torch.tensor([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]],
                        dtype=torch.float32) * geometry.CAM_DIST
    torch.testing.assert_close(eyes, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="6 views"):
        geometry.fixed_views(8, layout="axis")


def test_layout_flips_map_every_view_onto_the_input_layout():
    """After the flips, column u of the back, top and bottom views covers the same world x as column u
    of the front view, so a decoder's skip at column u describes all of them."""
    R, _ = geometry.fixed_views(6, layout="axis")
    cols, rows = geometry.layout_flips(R)
    x = geometry.ortho_pixel_grid(8, 8)[0][0]  # camera-plane x of the 8 columns
    for i in range(6):
        world_x = x.flip(0) if cols[i] else x  # camera x of column u, after the flip, along world x
        along_x = R[i, 0, 0]
        if along_x.abs() > 0.5:  # front, back, top, bottom: the camera's x is world +-x
            torch.testing.assert_close(world_x * along_x, x)
        else:  # right, left: columns run along depth, rows are already world y
            assert R[i, 1, 1] == 1 and not cols[i]
    assert not rows.any()


def test_flipped_back_view_silhouette_is_the_front_one():
    """Front and back ortho views cast the same lines, so after the flip their GT masks agree."""
    s = make_samples(2_000_321, MakeConfig(views=1, novel=1, surf_points=64, layout="axis"))
    cols, _ = geometry.layout_flips(geometry.fixed_views(6, layout="axis")[0])
    m = s["fdepth"][0] > 0
    assert m[0].sum() > 100 and cols[1]
    assert (m[1][:, ::-1] == m[0]).mean() > 0.995
    assert (m[1] == m[0]).mean() < (m[1][:, ::-1] == m[0]).mean()  # the flip matters


def test_fuse_gt_depth_reproduces_the_surface(sample):
    depth = torch.from_numpy(sample["fdepth"][0].astype(np.float32))[None]
    R, t = _views(sample)
    pts = geometry.fuse3d(depth, R, t)[0].numpy()
    pts = pts[(depth[0] > 0).reshape(-1).numpy()]
    surf = sample["surf"] @ sample["R_in"][0].T
    d_pred_to_gt = cKDTree(surf).query(pts)[0]
    d_gt_to_pred = cKDTree(pts).query(surf)[0]
    # limited by the 20k GT samples' spacing, not by the fusion: well under a pixel
    assert np.median(d_pred_to_gt) < 0.25 * PIXEL
    assert d_pred_to_gt.mean() < 0.5 * PIXEL
    assert d_gt_to_pred.mean() < 1.0 * PIXEL  # and cover it, up to pixel size


def test_render_known_points_matches_raycast_depth(sample):
    surf = torch.from_numpy((sample["surf"] @ sample["R_in"][0].T).astype(np.float32))[None]
    R = torch.from_numpy(sample["nR"][0])[None]
    t = torch.from_numpy(sample["nt"][0])[None]
    out = geometry.render_depth(surf, torch.ones(1, surf.shape[1]), R, t, 64, 64, upscale=1)
    gt = torch.from_numpy(sample["ndepth"][0].astype(np.float32))
    both = (out["depth"][0] > 0) & (gt > 0)
    assert both.sum() > 200
    err = (out["depth"][0] - gt).abs()[both]
    assert err.median() < 0.5 * PIXEL
    # silhouettes agree: pixels the points cover vs pixels the ray caster hits
    iou = both.sum() / ((out["depth"][0] > 0) | (gt > 0)).sum()
    assert iou > 0.8


def test_zbuffer_keeps_the_nearest_point_and_counts_collisions():
    R, t = geometry.look_at(torch.tensor([[0.0, 0.0, 2.0]]))
    pts = torch.tensor([[[0.01, 0.01, 0.5], [0.01, 0.01, -0.5], [0.6, 0.6, 0.0]]])
    out = geometry.render_depth(pts, torch.ones(1, 3), R[None].float(), t[None].float(), 8, 8,
                                upscale=1)
    d = out["depth"][0, 0]
    assert d.max() == pytest.approx(2.0, abs=1e-5)  # the point at z=0
    assert sorted(d[d > 0].tolist()) == pytest.approx([1.5, 2.0], abs=1e-5)  # nearer of the two wins
    assert out["collision"][0, 0].max() == 2  # two points landed on one pixel


def test_invisible_points_do_not_render():
    R, t = geometry.look_at(torch.tensor([[0.0, 0.0, 2.0]]))
    pts = torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]]])
    out = geometry.render_depth(pts, torch.tensor([[-1.0, 1.0]]), R[None].float(),
                                t[None].float(), 8, 8, upscale=1)
    assert out["depth"].max() == pytest.approx(2.5, abs=1e-5)


def test_gradcheck_fuse3d():
    R, t = geometry.fixed_views(6, layout="axis")
    depth = (torch.rand(1, 6, 3, 3, dtype=torch.float64) + 1.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: geometry.fuse3d(d, R.double(), t.double()), (depth,))


def test_gradcheck_render_depth():
    """Depth and mask logits are differentiable; x/y rounding is not (as in the paper)."""
    R, t = geometry.look_at(torch.tensor([[0.3, 0.4, 2.0]], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    pts = ((torch.rand(1, 6, 3, generator=g, dtype=torch.float64) - 0.5) * 1.4).requires_grad_()
    logits = (torch.rand(1, 6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()

    def f(p, lg):
        o = geometry.render_depth(p, lg, R[None], t[None], 6, 6, upscale=2)
        return o["depth"], o["mask_logit"]

    assert torch.autograd.gradcheck(f, (pts, logits), eps=1e-7, atol=1e-5)
