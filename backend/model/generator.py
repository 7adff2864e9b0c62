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
With ``prior = "inflate"`` (model v5) the silhouette's inflation height field (``inflate``: distance
to the outline d and height h, computed from the input's alpha inside forward, so a checkpoint needs
no extra preprocessing) enters twice: as two more input channels, and beside the last decoder
features into the 1x1 head, so the front and back depths can be h plus a learned correction.
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
import torch.nn.functional as F

from . import geometry
from .inflate import height_field

PRIORS = ("none", "inflate")

ENC = (32, 64, 128, 192, 256)
DEC = (192, 128, 96, 64)
STEM = 24    # channels of the 128 -> 64 input stem (in_res 128)
DEC128 = 16  # channels of the 64 -> 128 decoder block (out_res 128): narrow, as 128x128 convolutions cost most per channel
PRIOR_RES = 64  # the inflation prior's height field is computed at this size


@dataclass
class GeneratorConfig:
    views: int = 6
    layout: str = "axis"       # geometry.LAYOUTS: "axis" (6) or "corners" (8, the paper)
    align: bool = True         # draw every view in the input's pixel layout (geometry.layout_flips)
    latent: int = 512
    width: int = 1024          # hidden width of the FC layers around the latent
    out_res: int = 64          # fixed-view maps: 64, or 128 (the seed's outSize: one more decoder block)
    in_res: int = 64           # input crop: 64, or 128 (a strided stem brings it to 64 first)
    depth_range: float = 1.2   # predicted depth lies in CAM_DIST +- depth_range
    skips: bool = True
    depth_quantiles: int = 1   # odd Q: per pixel the depth quantiles (k + 0.5) / Q; 1 = the median
    prior: str = "none"        # "inflate": the silhouette's height field as input and head channels

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        if self.depth_quantiles < 1 or self.depth_quantiles % 2 == 0:
            raise ValueError(f"depth_quantiles must be odd (the middle one is the median), not {self.depth_quantiles}")
        if self.out_res not in (64, 128) or self.in_res not in (64, 128):
            raise ValueError(f"in_res and out_res must be 64 or 128, not {self.in_res} / {self.out_res}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, not {self.prior!r}")
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


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area down, bilinear up, identity at the same size."""
    if x.shape[-1] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bilinear"
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


def _flip(y: torch.Tensor, cols: bool, rows: bool) -> torch.Tensor:
    dims = [d for d, f in ((-1, cols), (-2, rows)) if f]
    return y.flip(dims) if dims else y


def _cbr(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class StructureGenerator(nn.Module):
    """image (B,4,I,I) in [0,1] -> dict(depth (B,V,O,O), the median, depth_q (B,V,Q,O,O), all
    quantiles, mask_logit (B,V,O,O), rgb (B,V,3,O,O)); I = ``in_res``, O = ``out_res``."""

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        cfg = cfg or GeneratorConfig()
        self.cfg = cfg
        extra = 2 if cfg.prior == "inflate" else 0  # (d, h) channels
        c_in = 4 + extra
        # 128 input: a cheap strided stem to 64, whose features also feed the 128 decoder block
        self.stem = (nn.Sequential(_cbr(c_in, STEM, 2), _cbr(STEM, STEM)) if cfg.in_res == 128 else None)
        if self.stem is not None:
            c_in = STEM
        self.enc = nn.ModuleList([nn.Sequential(_cbr(c_in, ENC[0], 2), _cbr(ENC[0], ENC[0]))] +
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
        if cfg.out_res == 128:  # the seed's 128x128 maps: one more (narrow) block, skip from the stem
            sc = STEM if self.stem is not None and cfg.skips else 0
            blocks.append(nn.Sequential(_cbr(ci + sc, DEC128), nn.Upsample(scale_factor=2, mode="nearest"),
                                        _cbr(DEC128, DEC128)))
            ci = DEC128
        self.dec = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ci + extra, cfg.views * (cfg.depth_quantiles + 4), 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        cols, rows = geometry.layout_flips(cfg.fixed_views()[0])
        self._cols, self._rows = cols.tolist(), rows.tolist()  # (V,) bool: mirror columns / rows

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] != self.cfg.in_res or x.shape[-2] != self.cfg.in_res:
            raise ValueError(f"this model takes {self.cfg.in_res}x{self.cfg.in_res} inputs, not "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        prior = None
        if self.cfg.prior == "inflate":
            # a smooth field: computed at 64 and resized, 8x cheaper at 128 than at full size
            coarse = torch.cat(height_field(_resize(x[:, 3:4], PRIOR_RES)), 1)
            x = torch.cat([x, _resize(coarse, self.cfg.in_res)], 1)
            prior = _resize(coarse, self.cfg.out_res).contiguous(memory_format=torch.channels_last)
        stem = x = self.stem(x) if self.stem is not None else x
        feats = []
        for layer in self.enc:
            x = layer(x)
            feats.append(x)
        skips = feats[-2::-1] + ([stem] if self.stem is not None else [])  # 4, 8, 16, 32 (, 64)
        h = self.project(self.to_latent(x)).view(-1, 256, 4, 4)
        for i, block in enumerate(self.dec):
            if self.cfg.skips and i < len(skips):
                h = torch.cat([h, skips[i]], 1)
            h = block(h)
        y = self.head(h if prior is None else torch.cat([h, prior], 1))
        b, _, hh, ww = y.shape
        q = self.cfg.depth_quantiles
        y = y.view(b, self.cfg.views, q + 4, hh, ww)
        if self.cfg.align:
            # per view, only the flips it needs: a where() over whole flipped copies of the output
            # cost a fifth of a 128px training step
            y = torch.stack([_flip(yv, bool(c), bool(r)) for yv, c, r
                             in zip(y.unbind(1), self._cols, self._rows)], 1)
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
