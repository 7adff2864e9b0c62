"""Radiance fields behind one interface: ``field(xyz, dirs) -> (sigma, rgb)``.

* ``MLPField``: the seed's NeRF MLP (positional encoding, 8 layers with a skip, sigmoid colour).
  Preset ``mlp`` uses the fixes the research measured (6 frequencies, softplus density shifted by
  -1, samples only inside the scene box); preset ``mlp-seed`` is the literal seed configuration
  (16 frequencies, ReLU density, 32 samples in [2, 6]) kept for reference - it tends to collapse
  to the empty scene.
* ``GridField``: the fast field. One dense tensor of raw density + colour (DVGO/Plenoxels idea)
  read with trilinear ``grid_sample``; density = softplus(raw + shift) / voxel size after
  interpolation (sharp surfaces); colour = sigmoid of interpolated values, optionally degree-1
  spherical harmonics for view dependence. Coarse-to-fine (``upsample``) and an occupancy grid of
  the density vertices that lets the renderer skip empty space. Pure PyTorch: CPU and CUDA.

Every field also says how it wants to be sampled (``sampling``) and can describe itself as a
JSON config (``config()``), which together with its ``state_dict`` is the saved model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import encoded_dim, positional_encoding


class Field(nn.Module):
    """Common interface. ``aabb`` (2,3) is the scene box in world units."""

    kind = "base"
    aabb: torch.Tensor
    # "fixed_step" (step in world units) or "stratified" (n_samples per ray)
    sampling: str = "stratified"
    n_samples: int = 64
    bounds: str = "aabb"  # or "near_far"
    near: float = 2.0
    far: float = 6.0

    def __init__(self, aabb: torch.Tensor | list) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())

    def forward(self, xyz: torch.Tensor, dirs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def step(self) -> float:
        raise NotImplementedError

    def occupied(self, xyz: torch.Tensor) -> torch.Tensor | None:
        """Bool per point, False where the field is known to be empty; None = no acceleration."""
        return None

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class MLPField(Field):
    """The seed's MLP NeRF (no view directions unless ``view_freqs`` > 0)."""

    kind = "mlp"

    def __init__(self, aabb, n_freqs: int = 6, width: int = 64, depth: int = 8, skip: int = 4,
                 density_act: str = "softplus", density_shift: float = -1.0, view_freqs: int = 0,
                 n_samples: int = 64, bounds: str = "aabb", near: float = 2.0, far: float = 6.0) -> None:
        super().__init__(aabb)
        self.n_freqs, self.width, self.depth, self.skip = n_freqs, width, depth, skip
        self.density_act, self.density_shift, self.view_freqs = density_act, density_shift, view_freqs
        self.sampling, self.n_samples, self.bounds, self.near, self.far = "stratified", n_samples, bounds, near, far
        in_dim = encoded_dim(3, n_freqs)
        layers = []
        for i in range(depth):
            d_in = in_dim if i == 0 else width + (in_dim if i == skip else 0)
            layers.append(nn.Linear(d_in, width))
        self.layers = nn.ModuleList(layers)
        if view_freqs > 0:
            self.sigma_head = nn.Linear(width, 1)
            self.feat = nn.Linear(width, width)
            self.rgb_head = nn.Sequential(nn.Linear(width + encoded_dim(3, view_freqs), width // 2), nn.ReLU(),
                                          nn.Linear(width // 2, 3))
        else:
            self.head = nn.Linear(width, 4)

    def _normalise(self, xyz: torch.Tensor) -> torch.Tensor:
        # The seed encodes raw world coordinates; with an AABB we map the box to [-1, 1] so the
        # encoding's frequencies mean the same thing for any scene scale.
        if self.bounds == "aabb":
            return 2.0 * (xyz - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) - 1.0
        return xyz

    def forward(self, xyz, dirs=None):
        x0 = positional_encoding(self._normalise(xyz), self.n_freqs)
        h = x0
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, x0], dim=-1)
            h = F.relu(layer(h))
        if self.view_freqs > 0:
            raw_sigma = self.sigma_head(h).squeeze(-1)
            d = dirs if dirs is not None else torch.zeros_like(xyz)
            rgb = torch.sigmoid(self.rgb_head(torch.cat([self.feat(h), positional_encoding(d, self.view_freqs)], -1)))
        else:
            out = self.head(h)
            raw_sigma, rgb = out[..., 0], torch.sigmoid(out[..., 1:])
        if self.density_act == "relu":
            sigma = F.relu(raw_sigma)
        else:
            sigma = F.softplus(raw_sigma + self.density_shift)
        return sigma, rgb

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "aabb": self.aabb.tolist(), "n_freqs": self.n_freqs, "width": self.width,
                "depth": self.depth, "skip": self.skip, "density_act": self.density_act,
                "density_shift": self.density_shift, "view_freqs": self.view_freqs, "n_samples": self.n_samples,
                "bounds": self.bounds, "near": self.near, "far": self.far}


_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199


def grid_resolution(aabb: torch.Tensor, n_voxels: int) -> tuple[int, int, int]:
    """(nx, ny, nz) vertices with cubic voxels and about ``n_voxels`` in total."""
    ext = (aabb[1] - aabb[0]).tolist()
    vs = (ext[0] * ext[1] * ext[2] / n_voxels) ** (1.0 / 3.0)
    return tuple(max(2, int(round(e / vs)) + 1) for e in ext)  # type: ignore[return-value]


class GridField(Field):
    """Dense density + colour grid with trilinear interpolation (the fast field)."""

    kind = "grid"
    occ: torch.Tensor

    def __init__(self, aabb, n_voxels: int = 96 ** 3, sh_degree: int = 0, step_ratio: float = 0.8,
                 init_density: float = 0.1, final_voxels: int | None = None, occ_threshold: float = 1e-3,
                 resolution: list[int] | None = None) -> None:
        super().__init__(aabb)
        self.sampling = "fixed_step"
        self.sh_degree = sh_degree
        self.step_ratio = step_ratio
        self.occ_threshold = occ_threshold
        self.init_density = init_density
        # Density is expressed per "final voxel": raw values stay O(1..10) for sharp surfaces at
        # any scene scale, so one learning rate works everywhere.
        self.final_voxels = final_voxels or n_voxels
        nxf, _, _ = grid_resolution(self.aabb, self.final_voxels)
        self.density_scale = float((nxf - 1) / (self.aabb[1, 0] - self.aabb[0, 0]))
        # softplus(shift) * scale = init_density
        self.shift = float(math.log(math.expm1(init_density / self.density_scale)))
        self.n_color = 3 * (1 if sh_degree == 0 else 4)
        res = tuple(resolution) if resolution is not None else grid_resolution(self.aabb, n_voxels)
        nx, ny, nz = res
        self.grid = nn.Parameter(torch.zeros(1, 1 + self.n_color, nz, ny, nx))
        self.register_buffer("occ", torch.ones(nz, ny, nx, dtype=torch.bool))

    # -- geometry helpers
    @property
    def resolution(self) -> tuple[int, int, int]:
        nz, ny, nx = self.grid.shape[2:]
        return nx, ny, nz

    @property
    def voxel_size(self) -> float:
        return float((self.aabb[1, 0] - self.aabb[0, 0]) / (self.resolution[0] - 1))

    @property
    def step(self) -> float:
        return self.voxel_size * self.step_ratio

    def _norm(self, xyz: torch.Tensor) -> torch.Tensor:
        return 2.0 * (xyz - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) - 1.0

    def forward(self, xyz, dirs=None):
        g = self._norm(xyz).reshape(1, -1, 1, 1, 3)
        feat = F.grid_sample(self.grid, g, mode="bilinear", padding_mode="border", align_corners=True)
        feat = feat.reshape(self.grid.shape[1], -1).T  # (N, C)
        sigma = F.softplus(feat[:, 0] + self.shift) * self.density_scale
        if self.sh_degree == 0:
            rgb = torch.sigmoid(feat[:, 1:4])
        else:
            d = dirs if dirs is not None else torch.zeros_like(xyz)
            basis = torch.stack([torch.full_like(d[:, 0], _SH_C0), -_SH_C1 * d[:, 1], _SH_C1 * d[:, 2],
                                 -_SH_C1 * d[:, 0]], dim=-1)  # (N, 4)
            coef = feat[:, 1:].reshape(-1, 3, 4)
            rgb = torch.sigmoid((coef * basis.unsqueeze(1)).sum(-1) / _SH_C0)
        return sigma, rgb

    def vertex_density(self) -> torch.Tensor:
        """Density at every grid vertex (nz, ny, nx), without interpolation."""
        return F.softplus(self.grid[0, 0].detach() + self.shift) * self.density_scale

    @torch.no_grad()
    def update_occupancy(self) -> float:
        """Mark vertices whose neighbourhood can stop light; returns the occupied fraction."""
        alpha = 1.0 - torch.exp(-self.vertex_density() * self.step)
        occ = (alpha > self.occ_threshold).float()[None, None]
        self.occ = F.max_pool3d(occ, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        return float(self.occ.float().mean())

    def occupied(self, xyz: torch.Tensor) -> torch.Tensor:
        n = torch.tensor(self.resolution, device=xyz.device, dtype=xyz.dtype)
        idx = ((xyz - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * (n - 1)).round().long()
        idx = torch.minimum(idx.clamp_min(0), (n - 1).long())
        return self.occ[idx[:, 2], idx[:, 1], idx[:, 0]]

    @torch.no_grad()
    def upsample(self, n_voxels: int) -> None:
        """Trilinearly resample to a finer grid (coarse-to-fine); the caller rebuilds its optimiser."""
        nx, ny, nz = grid_resolution(self.aabb, n_voxels)
        new = F.interpolate(self.grid.data, size=(nz, ny, nx), mode="trilinear", align_corners=True)
        self.grid = nn.Parameter(new.contiguous())
        occ = F.interpolate(self.occ[None, None].float(), size=(nz, ny, nx), mode="trilinear", align_corners=True)
        self.occ = occ[0, 0] > 0

    def total_variation(self, n_sample: int = 0) -> torch.Tensor:
        """Mean squared difference between neighbouring vertices (smoothness prior)."""
        g = self.grid
        return ((g[:, :, 1:] - g[:, :, :-1]).pow(2).mean() + (g[:, :, :, 1:] - g[:, :, :, :-1]).pow(2).mean()
                + (g[..., 1:] - g[..., :-1]).pow(2).mean())

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "aabb": self.aabb.tolist(), "sh_degree": self.sh_degree,
                "step_ratio": self.step_ratio, "init_density": self.init_density,
                "final_voxels": self.final_voxels, "occ_threshold": self.occ_threshold,
                "resolution": list(self.resolution), "n_voxels": int(math.prod(self.resolution))}


PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"kind": "grid"},
    "fast-sh": {"kind": "grid", "sh_degree": 1},
    "mlp": {"kind": "mlp"},
    "mlp-seed": {"kind": "mlp", "n_freqs": 16, "density_act": "relu", "density_shift": 0.0, "n_samples": 32,
                 "bounds": "near_far", "near": 2.0, "far": 6.0},
}


def build_field(config: dict[str, Any]) -> Field:
    """A field from its JSON config (as saved) - the only way models are reconstructed."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    if kind == "grid":
        cfg.pop("n_voxels_current", None)
        n = cfg.pop("n_voxels", 96 ** 3)
        return GridField(n_voxels=n, **cfg)
    if kind == "mlp":
        return MLPField(**cfg)
    raise ValueError(f"unknown field kind {kind!r}")
