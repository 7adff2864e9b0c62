"""Structure generator (Lin, Kong & Lucey 2018, §3.1), sized for CPU training.

Encoder: conv3x3+BN+ReLU stages 64 -> 32 -> 16 -> 8 -> 4 -> 2 (channels 32, 64, 128, 192, 256),
FC (``width``) -> latent. Decoder: FC -> FC -> 4x4x256 map, then 4 blocks [concat encoder skip at the
same resolution (U-Net style, ``skips``), conv3x3, upsample x2, conv3x3] to 64x64, then a 1x1 conv
giving, per fixed view, Q depths (quantiles, ``depth_quantiles``; 1 = the median) + 1 mask logit + 3 RGB.

Choice: per-pixel *depth* along each fixed orthographic view (not free XYZ); x/y come from the
pixel grid in fuse3d (the paper's (u, v, depth) with the u, v regulariser made exact). Depth is
``CAM_DIST + depth_range * tanh(.)``: bounded to the cameras' view of the unit ball, and the
zero-initialised head starts on the plane through the origin (the paper's "gridInit" idea).
The skips are beyond the paper: they carry the silhouette's fine detail past the latent.
Fixed views (``layout``): the default "axis" puts 6 orthographic views on the axes of the viewer
frame, so the front view is the input's own view and every other one shares a row or column
axis with it; with ``align`` the decoder draws each view in the input's pixel layout (mirrored
into the view's convention at the end), so the skips line up with what they describe.
Checkpoints from before (models v1-v3) use the paper's 8 cube corners without alignment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from . import geometry

ENC = (32, 64, 128, 192, 256)
DEC = (192, 128, 96, 64)


@dataclass
class GeneratorConfig:
    views: int = 6
    layout: str = "axis"       # geometry.LAYOUTS: "axis" (6) or "corners" (8, the paper)
    align: bool = True         # draw every view in the input's pixel layout (geometry.layout_flips)
    latent: int = 512
    width: int = 1024          # hidden width of the FC layers around the latent
    out_res: int = 64
    depth_range: float = 1.2   # predicted depth lies in CAM_DIST +- depth_range
    skips: bool = True
    depth_quantiles: int = 1   # odd Q: per pixel the depth quantiles (k + 0.5) / Q; 1 = the median

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        if self.depth_quantiles < 1 or self.depth_quantiles % 2 == 0:
            raise ValueError(f"depth_quantiles must be odd (the middle one is the median), not {self.depth_quantiles}")
        if geometry.LAYOUTS.get(self.layout) != self.views:
            raise ValueError(f"layout {self.layout!r} has {geometry.LAYOUTS.get(self.layout)} views, "
                             f"not {self.views}")

    def fixed_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        return geometry.fixed_views(layout=self.layout)

    @property
    def quantile_levels(self) -> torch.Tensor:
        return (torch.arange(self.depth_quantiles) + 0.5) / self.depth_quantiles

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        # a config without these fields was written by models v1-v3: the paper's 8 corners, unaligned
        d = {"layout": "corners", "align": False, **d}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _cbr(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class StructureGenerator(nn.Module):
    """image (B,4,64,64) in [0,1] -> dict(depth (B,V,64,64), the median, depth_q (B,V,Q,64,64), all
    quantiles, mask_logit (B,V,64,64), rgb (B,V,3,64,64))."""

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        cfg = cfg or GeneratorConfig()
        if cfg.out_res != 64:
            raise ValueError("this generator decodes to 64x64 per view")
        self.cfg = cfg
        self.enc = nn.ModuleList([nn.Sequential(_cbr(4, ENC[0], 2), _cbr(ENC[0], ENC[0]))] +
                                 [_cbr(a, b, 2) for a, b in zip(ENC, ENC[1:])])  # 32,16,8,4,2
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(ENC[-1] * 4, cfg.width), nn.BatchNorm1d(cfg.width),
                                       nn.ReLU(True), nn.Linear(cfg.width, cfg.latent))
        self.project = nn.Sequential(nn.ReLU(), nn.Linear(cfg.latent, cfg.width), nn.BatchNorm1d(cfg.width),
                                     nn.ReLU(True), nn.Linear(cfg.width, 256 * 16), nn.BatchNorm1d(256 * 16),
                                     nn.ReLU(True))
        skip_ch = ENC[-2::-1] if cfg.skips else (0,) * 4  # 192@4, 128@8, 64@16, 32@32
        blocks, ci = [], 256
        for sc, co in zip(skip_ch, DEC):
            blocks.append(nn.Sequential(_cbr(ci + sc, co), nn.Upsample(scale_factor=2, mode="nearest"), _cbr(co, co)))
            ci = co
        self.dec = nn.ModuleList(blocks)
        self.head = nn.Conv2d(DEC[-1], cfg.views * (cfg.depth_quantiles + 4), 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        cols, rows = geometry.layout_flips(cfg.fixed_views()[0])
        self.register_buffer("flip_cols", cols, persistent=False)  # (V,) bool
        self.register_buffer("flip_rows", rows, persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = []
        for layer in self.enc:
            x = layer(x)
            feats.append(x)
        h = self.project(self.to_latent(x)).view(-1, 256, 4, 4)
        for i, block in enumerate(self.dec):
            if self.cfg.skips:
                h = torch.cat([h, feats[-2 - i]], 1)
            h = block(h)
        y = self.head(h)
        b, _, hh, ww = y.shape
        q = self.cfg.depth_quantiles
        y = y.view(b, self.cfg.views, q + 4, hh, ww)
        if self.cfg.align:
            y = torch.where(self.flip_cols.view(1, -1, 1, 1, 1), y.flip(-1), y)
            y = torch.where(self.flip_rows.view(1, -1, 1, 1, 1), y.flip(-2), y)
        depth_q = geometry.CAM_DIST + torch.tanh(y[:, :, :q]) * self.cfg.depth_range
        return {"depth": depth_q[:, :, q // 2], "depth_q": depth_q, "mask_logit": y[:, :, q],
                "rgb": torch.sigmoid(y[:, :, q + 1:q + 4])}


def fused_points(out: dict[str, torch.Tensor], R: torch.Tensor, t: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's cloud: every quantile depth of every kept pixel becomes a point.
    Returns points (B,N,3), keep (B,N) bool and colours (B,N,3) in [0,1], N = Q*V*H*W.

    Why all quantiles: where one image leaves the depth open (a thin object's tilt, the far side),
    points spread over the likely depths cover the surface where a single guess misses it; where
    the depth is clear the quantiles coincide.
    """
    dq = out["depth_q"]
    b, v, q, h, w = dq.shape
    pts = geometry.fuse3d(dq.transpose(1, 2).reshape(b * q, v, h, w), R, t).reshape(b, q * v * h * w, 3)
    keep = (out["mask_logit"] > 0).reshape(b, 1, -1).expand(b, q, -1).reshape(b, -1)
    rgb = out["rgb"].permute(0, 1, 3, 4, 2).reshape(b, 1, -1, 3).expand(b, q, -1, 3).reshape(b, -1, 3)
    return pts, keep, rgb


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
