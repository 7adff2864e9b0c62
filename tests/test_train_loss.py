"""The 3D Chamfer training loss: it is the evaluation metric on the fused cloud, and it pulls
the predicted depth towards the surface."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from backend.train import chamfer_loss


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
