"""Structure generator speed: forward at batch 1 and 16, fuse3d, render_depth, training samples/s.

All numbers are medians after a warm-up, measured in this one run (CPU threads as configured).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from image2points.backend.model import geometry
from image2points.backend.model.generator import StructureGenerator, n_params
from image2points.bench.timing import measure, table


def seg_rows(res: dict, rows: list, forward_ms: float, reps: int) -> None:
    """Foreground cut of a 1-megapixel RGB photo (no alpha), per megapixel, beside the forward."""
    import numpy as np

    from image2points.backend.segment import estimate_alpha, grabcut, segment

    yy, xx = np.mgrid[:1000, :1000].astype(np.float32)
    img = np.stack([60 + 40 * yy / 1000, 90 + 30 * xx / 1000, np.full_like(xx, 140)], -1)
    img[((xx - 500) / 250) ** 2 + ((yy - 500) / 300) ** 2 < 1] = (200, 90, 40)
    img = img.astype(np.uint8)
    for key, label, fn in (("segment", "foreground cut (shipped), 1 Mpx photo", segment),
                           ("grabcut", "  GrabCut prior alone", grabcut),
                           ("border", "  border rule (old baseline)", estimate_alpha)):
        s = measure(lambda fn=fn: fn(img), repeats=reps)
        res[f"seg_{key}_ms_per_mpx"] = s.median * 1e3
        rows.append((label, s.ms(), f"{s.median * 1e3 / forward_ms:.1f}x the forward (b1)"))


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    reps = 5
    nchw = StructureGenerator().eval()
    # as checkpoint.load and train.py run it: NHWC weights (oneDNN's faster CPU layout)
    net = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    R, t = net.cfg.fixed_views()
    res: dict = {"params_M": round(n_params(net) / 1e6, 3), "threads": torch.get_num_threads()}
    rows = []
    with torch.inference_mode():
        for b in (1, 16):
            x = torch.rand(b, 4, 64, 64)
            s = measure(lambda: net(x), repeats=reps)
            base = measure(lambda: nchw(x), repeats=reps)
            res[f"forward_b{b}_ms"] = s.median * 1e3
            res[f"forward_b{b}_nchw_ms"] = base.median * 1e3
            rows.append((f"generator forward, batch {b}", s.ms(), f"{b / s.median:.1f} img/s"))
            rows.append(("  same, NCHW weights (baseline)", base.ms(),
                         f"NHWC is {base.median / s.median:.2f}x faster"))
        seg_rows(res, rows, res["forward_b1_ms"], reps)
        out = net(torch.rand(16, 4, 64, 64))
        s = measure(lambda: geometry.fuse3d(out["depth"], R, t), repeats=reps)
        res["fuse3d_b16_ms"] = s.median * 1e3
        rows.append((f"fuse3d, batch 16 ({net.cfg.views}x64x64 px)", s.ms(), ""))
    pts = geometry.fuse3d(out["depth"], R, t).detach().requires_grad_()
    lg = out["mask_logit"].reshape(16, -1).detach()
    nR, nt = geometry.random_views(2)
    nR, nt = nR.expand(16, 2, 3, 3), nt.expand(16, 2, 3)
    s = measure(lambda: geometry.render_depth(pts, lg, nR, nt, 64, 64, upscale=3)["depth"].sum().backward(),
                repeats=reps)
    res["render_depth_b16_k2_u3_fwd_bwd_ms"] = s.median * 1e3
    rows.append(("render_depth fwd+bwd, b16, 2 views, U=3", s.ms(), ""))
    # one training step (stage 1 losses) at the default batch
    net.train()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    b = 24
    x = torch.rand(b, 4, 64, 64)
    gt = torch.rand(b, net.cfg.views, 64, 64) + 1.5
    m = (torch.rand(b, net.cfg.views, 64, 64) > 0.6).float()

    def step() -> None:
        o = net(x)
        loss = F.binary_cross_entropy_with_logits(o["mask_logit"], m) + ((o["depth"] - gt).abs() * m).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    s = measure(step, repeats=3 if quick else reps)
    res["train_step_b24_ms"] = s.median * 1e3
    res["train_samples_per_s"] = b / s.median
    rows.append((f"train step (stage 1), batch {b}", s.ms(), f"{b / s.median:.1f} samples/s"))
    print(table("model", rows, ("what", "median (min-max)", "rate")))
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}


if __name__ == "__main__":
    print(run(quick=True))
