"""Inference: decoded images -> coloured point clouds in the viewer frame, batched.

With the source image at hand (``reconstruct``, or ``reconstruct_inputs(..., sources=...)``) the
part the input camera sees is the picture itself, lifted by the predicted front depth
(``lift``); without it, the model's own fused cloud (the fixed-view maps at 64x64)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image2points.addon.core.camera import VIEWER_FRAME as FRAME

from ..segment import object_alpha
from . import checkpoint
from . import lift as lifting
from .generator import fused_points
from .preprocess import preprocess

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def default_checkpoint_path() -> Path:
    return WEIGHTS_DIR / "default.pt"


@dataclass
class PointCloud:
    """Points in the frame "viewer-unit-ball/v1": the input camera's axes (x right, y up, looking
    down -z), origin at the object's bounding-box centre, farthest surface point at distance 1."""

    xyz: np.ndarray  # (N,3) float32
    rgb: np.ndarray  # (N,3) uint8
    meta: dict[str, Any] = field(default_factory=dict)


class Reconstructor:
    def __init__(self, model: Any, card: dict[str, Any], device: str = "cpu"):
        self.model, self.device = model, device
        R, t = model.cfg.fixed_views()
        self.R, self.t = R.to(device), t.to(device)
        self.info = {"name": card.get("name", "image2points-pcg"), "sha256": card.get("sha256", ""),
                     "frame": FRAME, "trained": card.get("trained", ""),
                     "card": card.get("summary", "")}

    @classmethod
    def load(cls, path: str | None = None, device: str = "cpu") -> Reconstructor:
        model, card = checkpoint.load(path or default_checkpoint_path(), device)
        return cls(model, card, device)

    def preprocess(self, images: list[np.ndarray],
                   alphas: list[np.ndarray] | list[None] | None = None) -> torch.Tensor:
        alphas = alphas if alphas is not None else [None] * len(images)
        size = self.model.cfg.in_res
        return torch.from_numpy(np.stack([preprocess(im, size=size, alpha=a) for im, a in zip(images, alphas)])
                                ).to(self.device)

    def reconstruct(self, images: list[np.ndarray], density: int | None = None, lift: bool = True,
                    alphas: list[np.ndarray] | None = None) -> list[PointCloud]:
        """HxWx3/4 uint8 images -> one cloud each, from ONE batched forward pass. ``lift``: the
        input view is the picture (``density`` points, default ``lift.default_density``);
        otherwise the model's fused cloud. ``alphas``: the object masks (default: each image's
        own, ``object_alpha``), computed once for both uses."""
        if not images:
            return []
        alphas = alphas if alphas is not None else [object_alpha(im) for im in images]
        sources = list(zip(images, alphas)) if lift else None
        return self.reconstruct_inputs(self.preprocess(images, alphas), sources, density)

    @torch.inference_mode()
    def reconstruct_inputs(self, x: np.ndarray | torch.Tensor,
                           sources: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
                           density: int | list[int | None] | None = None) -> list[PointCloud]:
        """(B,4,S,S) ``preprocess`` outputs -> one cloud each; lets the server preprocess (and
        refuse) each job's image on its own, then run the good ones as one batch. ``sources``:
        per item the decoded image and its object mask (H,W) in [0,1], which turns on the lift."""
        out = self.model(torch.as_tensor(x).to(self.device))
        b = len(x)
        dens = density if isinstance(density, list) else [density] * b
        if sources is not None and any(src is not None for src in sources):
            maps = {k: out[k].float().cpu().numpy() for k in ("depth_q", "mask_logit", "rgb")}
            R, t = self.R.cpu().numpy(), self.t.cpu().numpy()
        if sources is None or any(src is None for src in sources):  # the model's own cloud
            pts, keep, rgb = fused_points(out, self.R, self.t)
        clouds = []
        for i in range(b):
            src = sources[i] if sources is not None else None
            meta: dict[str, Any] = {"frame": FRAME}
            if src is not None:
                im, alpha = src
                n = dens[i] or lifting.default_density(*alpha.shape)
                xyz, col, info = lifting.lift(im, alpha, maps["depth_q"][i], maps["mask_logit"][i],
                                              maps["rgb"][i], R, t, n, seed=i)
                meta.update(visible=info["visible"], hidden=info["hidden"], input_view=info["view"],
                            scale=info["scale"])
            else:
                xyz = pts[i][keep[i]].float().cpu().numpy()
                col = (rgb[i][keep[i]].clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()
            clouds.append(PointCloud(np.ascontiguousarray(xyz, np.float32),
                                     np.ascontiguousarray(col, np.uint8), meta))
        return clouds
