"""A small U-Net that finds the object in a photo (foreground probability per pixel).

Trained here on photo-like composites (``backend.data.photos``, ``backend.segment_train``); the
shipped weights are ``backend/weights/segnet.pt`` (a few hundred KB, loaded weights_only).
Input: RGB resized to ``NET_SIZE`` square (aspect is not kept: the mask is resized back the same
way). Output: logits (B, 1, NET_SIZE, NET_SIZE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NET_SIZE = 128
WIDTHS = (16, 32, 48, 64)  # at 1/2, 1/4, 1/8, 1/16 of NET_SIZE: a strided stem keeps CPU training cheap


def _block(i: int, o: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        self.enc = nn.ModuleList()
        c = 3
        for i, w in enumerate(widths):
            self.enc.append(_block(c, w, stride=2 if i == 0 else 1))
            c = w
        self.dec = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B,3,H,W) float in [0,1], H and W divisible by 16 -> logits (B,1,H,W)."""
        size = x.shape[-2:]
        x = x - 0.5
        skips = []
        for i, blk in enumerate(self.enc):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.dec))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.dec[i](torch.cat([x, skips[i]], 1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


def default_path() -> Path:
    return Path(__file__).resolve().parents[1] / "weights" / "segnet.pt"


def save(net: SegNet, path: str | Path, info: dict[str, Any]) -> None:
    torch.save({"widths": list(net.widths), "net_size": NET_SIZE, "info": info,
                "state_dict": {k: v.detach().cpu().half() if v.is_floating_point() else v
                               for k, v in net.state_dict().items()}}, str(path))


def load(path: str | Path | None = None) -> SegNet:
    """The trained net (eval mode, float32); FileNotFoundError when there are no weights."""
    blob = torch.load(str(path or default_path()), map_location="cpu", weights_only=True)
    net = SegNet(tuple(blob["widths"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return net.eval()


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,NET_SIZE,NET_SIZE) float in [0,1] (area resize)."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (NET_SIZE, NET_SIZE), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0
