"""Train the foreground net (``backend.model.segnet``) on photo-like composites, on a CPU.

    python -m image2points.backend.segment_train --make 4000 --data runs/seg/train.npz   # ~8 min, 1 core
    python -m image2points.backend.segment_train --data runs/seg/train.npz --minutes 15 --out backend/weights/segnet.pt
    python -m image2points.backend.segment_train --make 4000 --start 4000 --data runs/seg/more.npz
    python -m image2points.backend.segment_train --data "runs/seg/*.npz" --init backend/weights/segnet.pt --lr 2e-3 --minutes 30

The shipped weights: 16 min from scratch on composites 0-3999, then resumed runs (each its own
cosine schedule) on fresh composites: 30 + 9 min (4000-7999), 32 min (0-23999), 45 min
(24000-51999), 35 min adding composites made at 240x320 with 30% zoomed (100000-123999); each
chosen on the ``tune`` split (README, Photos).

The composites come from the ``train`` split of ``backend.data.photos`` (its own seeds and the left
half of each panorama; the eval split uses neither, and its new shape families not at all).
Time-based cosine learning rate, BCE + soft Dice, flips and colour jitter; one thread.
"""

from __future__ import annotations

import argparse
import glob
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model import segnet
from .segment import zoom_box
from .threads import use_threads


def make_arrays(n: int, size: tuple[int, int] = (96, 128), start: int = 0, zoom: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` train-split composites resized to the net's square input: (n,S,S,3) and (n,S,S) uint8.
    ``zoom``: the share of them cut to a square around the object first (margin 1.3-2.2), which
    is what the zoomed second pass shows the net."""
    import cv2

    from .data.photos import make_photo

    s = segnet.NET_SIZE
    x = np.zeros((n, s, s, 3), np.uint8)
    y = np.zeros((n, s, s), np.uint8)
    rng = np.random.default_rng(start + 7919)
    for j in range(n):
        p = make_photo("train", start + j, size)
        img, mask = p.image, p.mask.astype(np.uint8) * 255
        if rng.random() < zoom:
            r0, r1, c0, c1 = zoom_box(p.mask, rng.uniform(1.3, 2.2))
            img, mask = img[r0:r1, c0:c1], mask[r0:r1, c0:c1]
        x[j] = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
        y[j] = cv2.resize(mask, (s, s), interpolation=cv2.INTER_AREA)
    return x, y


def load_data(pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """All composites of the .npz files matching ``pattern`` (a path or a glob), concatenated."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no composites match {pattern}")
    ds = [np.load(f) for f in files]
    return np.concatenate([d["x"] for d in ds]), np.concatenate([d["y"] for d in ds])


def train(x: np.ndarray, y: np.ndarray, minutes: float, batch: int = 16, lr: float = 3e-3,
          seed: int = 0, log_every: int = 50, init: str | None = None,
          reload: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
          checkpoint: Callable[[segnet.SegNet, dict[str, Any]], None] | None = None,
          ) -> tuple[segnet.SegNet, dict[str, Any]]:
    """``init``: weights to resume from; ``reload``: re-read the data every few minutes (composites
    still being made); ``checkpoint``: called every few minutes with the net (eval mode) and info."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = (segnet.load(init) if init else segnet.SegNet()).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    yt = torch.from_numpy(y)[:, None]
    budget, t0, step, loss_ema = minutes * 60.0, time.perf_counter(), 0, None
    last = t0
    while (el := time.perf_counter() - t0) < budget:
        if time.perf_counter() - last > 180:
            last = time.perf_counter()
            if reload is not None:
                x, y = reload()
                xt, yt = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)[:, None]
            if checkpoint is not None:
                checkpoint(net.eval(), {"steps": step, "minutes": round(el / 60, 2), "images": len(x)})
                net.train()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * el / budget))
        idx = torch.from_numpy(rng.integers(0, len(x), batch))
        xb = xt[idx].float() / 255.0
        yb = (yt[idx].float() / 255.0 > 0.5).float()
        if rng.random() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        xb = (xb * torch.empty(batch, 3, 1, 1).uniform_(0.85, 1.15)
              + torch.empty(batch, 1, 1, 1).uniform_(-0.08, 0.08)).clamp(0, 1)
        logit = net(xb)
        p = torch.sigmoid(logit)
        dice = 1 - (2 * (p * yb).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + yb.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logit, yb) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % log_every == 0:
            print(f"step {step} loss {loss_ema:.4f} ({el / 60:.1f} min)", flush=True)
    return net.eval(), {"steps": step, "minutes": round((time.perf_counter() - t0) / 60, 2),
                        "final_loss": round(loss_ema or 0.0, 4), "images": len(x), "batch": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m image2points.backend.segment_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help=".npz of composites (written by --make); a glob "
                   "when training: all matching files, re-read every 3 minutes")
    p.add_argument("--make", type=int, default=0, help="make this many composites into --data and stop")
    p.add_argument("--start", type=int, default=0, help="first composite index for --make")
    p.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"),
                   help="composite size for --make (area-resized to the net's input after)")
    p.add_argument("--zoom", type=float, default=0.0,
                   help="share of --make composites cut to a square around the object first")
    p.add_argument("--init", default=None, help="resume from these weights")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default=str(segnet.default_path()))
    a = p.parse_args(argv)
    use_threads(1)
    if a.make:
        x, y = make_arrays(a.make, tuple(a.size), a.start, a.zoom)
        np.savez_compressed(a.data, x=x, y=y)
        print(f"wrote {a.make} composites to {a.data}")
        return 0
    data = "backend.data.photos train split, seeds 6_000_000+"
    x, y = load_data(a.data)
    net, info = train(x, y, a.minutes, a.batch, a.lr, init=a.init, reload=lambda: load_data(a.data),
                      checkpoint=lambda n, i: segnet.save(n, a.out, {**i, "data": data, "init": a.init}))
    segnet.save(net, a.out, {**info, "data": data, "init": a.init})
    print(f"saved {a.out}: {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
