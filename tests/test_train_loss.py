"""Training losses: the depth quantile (pinball) loss and the 3D Chamfer loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from image2points.backend.train import chamfer_loss, pinball


def _sphere(n: int, seed: int) -> torch.Tensor:
    p = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, n, 3)).astype(np.float32))
    return p / p.norm(dim=-1, keepdim=True)


def test_chamfer_loss_matches_the_metric_and_sees_only_occupied_points():
    gt = _sphere(512, 0)
    pts = torch.cat([_sphere(4096, 1) * 1.2, torch.full((1, 4096, 3), 5.0)], 1)  # + far "background"
    logits = torch.cat([torch.full((1, 4096), 20.0), torch.full((1, 4096), -20.0)], 1)
    loss = float(chamfer_loss(pts, logits, gt, 512))
    kept = pts[0, :4096].numpy()
    p2g = cKDTree(gt[0].numpy()).query(kept)[0].mean()
    g2p = cKDTree(kept).query(gt[0].numpy())[0].mean()
    # 512 sampled points give the metric up to sampling noise; the background is never drawn
    assert abs(loss - 0.5 * (p2g + g2p)) < 0.03, (loss, p2g, g2p)
    assert 0.15 < loss < 0.3


def test_chamfer_loss_gradient_moves_points_onto_the_surface():
    torch.manual_seed(0)
    gt = _sphere(512, 0)
    scale = torch.tensor(1.5, requires_grad=True)
    opt = torch.optim.SGD([scale], lr=0.05)
    for _ in range(60):
        loss = chamfer_loss(_sphere(2048, 1) * scale, torch.zeros(1, 2048), gt, 512)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(scale.item() - 1.0) < 0.08, scale.item()


def test_pinball_with_one_level_is_l1_and_learns_the_quantiles():
    pred, target = torch.rand(2, 6, 1, 8, 8), torch.rand(2, 6, 8, 8)
    torch.testing.assert_close(pinball(pred, target, torch.tensor([0.5])), (pred[:, :, 0] - target).abs())
    # fitted to samples of U(0, 1), three levels land on the 1/6, 1/2, 5/6 quantiles
    levels = (torch.arange(3) + 0.5) / 3
    q = torch.zeros(1, 1, 3, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([q], lr=0.02)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        loss = pinball(q.expand(1, 1, 3, 32, 32), torch.rand(1, 1, 32, 32, generator=gen), levels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert q.detach().flatten().tolist() == pytest.approx([1 / 6, 1 / 2, 5 / 6], abs=0.03)
