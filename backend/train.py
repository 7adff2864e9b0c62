"""Train the structure generator, in the two stages of Lin, Kong & Lucey (2018).

    image2points train --data data --out runs/default           # 51 minutes, the default recipe
    image2points train --init backend/weights/default.pt --out runs/more --minutes 30  # go on
    image2points train --smoke                     # tiny, CI-sized: checks that the loss falls
    torchrun --nproc-per-node 4 -m image2points.backend.train --data data --out runs/ddp   # several GPUs

Stage 1 (fixed views): the generator's per-view depth, mask and colour are supervised directly by
the ground-truth maps of the fixed views (L1 depth on object pixels, or its quantile version with
``depth_quantiles`` > 1, + BCE mask + L1 colour).
Stage 2 (novel views): the fixed-view predictions are fused into one cloud (fuse3d) and rendered
by the pseudo-renderer at random novel views; L1 depth on pixels hit by exactly one point
(collision == 1, as in the paper's code) + BCE mask, added to the stage-1 loss.
Optionally (``w_chamfer``, off by default) a 3D Chamfer loss between the fused cloud and GT surface
samples is added: an ablation that did not help (model card, "Tried after v4").
The run is time-budgeted (CPU-first); the learning rate follows a cosine over the budget (or over
``max_steps`` when that ends the run first). A long budget runs in legs (``--leg-minutes``): each
leg ends with ``state.pt`` (weights, optimiser, step, elapsed time, the data-order and torch RNG
states, the config and the legs so far) plus a usable ``model.pt``, and ``image2points train
--resume RUN`` continues where it stopped, with the same config, data order and schedule position
(the schedule is a function of the training time or steps spent, so a run cut into legs follows
the same cosine as one run).
Data made at 128 px (``make-data --res 128``) trains a 128 px model: colours are compared as 2x2
block means and stage 2 renders the maps pooled to the 64 px novel views.
Half of each batch is mirrored left-right (``mirror``): exact new samples, as the fixed views map
onto each other under x -> -x (ShapeDataset._mirror).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cli_args import err, fraction, nonneg_float, nonneg_int, pos_float, pos_int, why, writable_dir
from .model import checkpoint, geometry
from .model.generator import GeneratorConfig, StructureGenerator
from .threads import use_threads


@dataclass
class TrainConfig:
    data: str = "data"
    out: str = "runs/default"
    minutes: float = 51.0         # the default recipe: make-data + train + eval < 60 min on 2 cores
    max_steps: int = 1_000_000
    batch: int = 24
    lr: float = 2e-3
    weight_decay: float = 1e-4
    stage2_frac: float = 0.3     # last fraction of the budget adds the novel-view loss
    novel: int = 2               # novel views per sample in stage 2
    upscale: int = 3             # pseudo-renderer upsampling factor U
    w_depth: float = 2.0
    w_rgb: float = 1.0
    w_novel: float = 0.5
    mirror: float = 0.5          # fraction of each batch mirrored in x (exact: ShapeDataset._mirror)
    w_chamfer: float = 0.0       # weight of a 3D Chamfer loss between the fused cloud and GT samples
    chamfer_points: int = 512    # points per side of that loss (sampled; 1024 costs 8x on CPU)
    threads: int = 2
    seed: int = 0
    max_shapes: int | None = None
    init: str | None = None      # start from these weights (a checkpoint file) instead of random
    gen: str = ""                # GeneratorConfig overrides for a new model, e.g. "align=0" (ablations)
    log_every: int = 50
    ckpt_every_s: float = 300.0
    leg_minutes: float | None = None  # stop this leg after this much wall time (state saved; --resume)
    leg_steps: int | None = None      # ...or after this many steps (legs that end at a known step)


def losses(net: torch.nn.Module, b: dict[str, torch.Tensor], cfg: TrainConfig, stage2: bool,
           fixed: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = net(b["inp"].contiguous(memory_format=torch.channels_last))
    m = b["mask"]
    n_obj = m.sum().clamp(min=1)
    rgb, rm = out["rgb"], b.get("rgb_mask", m)
    if rm.shape[-1] != m.shape[-1]:  # colours stored coarser (MakeConfig.res): the block means
        f = m.shape[-1] // rm.shape[-1]
        w = m.unsqueeze(2)
        rgb = _pool(rgb * w, f) / _pool(w, f).clamp(min=1e-6)
    ls = {
        "mask": F.binary_cross_entropy_with_logits(out["mask_logit"], m),
        "depth": (pinball(out["depth_q"], b["depth"], net_cfg(net).quantile_levels) * m).sum() / n_obj,
        "rgb": ((rgb - b["rgb"]).abs() * rm.unsqueeze(2)).sum() / (3 * rm.sum().clamp(min=1)),
    }
    total = ls["mask"] + cfg.w_depth * ls["depth"] + cfg.w_rgb * ls["rgb"]
    bsz = m.shape[0]
    depth, logit = out["depth"], out["mask_logit"]
    if stage2 and b["nmask"].shape[-1] != depth.shape[-1]:
        # novel views are stored at 64: render the maps pooled to that (the depth weighted by the
        # predicted mask, the logit its block max), 4x fewer points through the pseudo-renderer
        f = depth.shape[-1] // b["nmask"].shape[-1]
        w = torch.sigmoid(logit)
        depth = _pool(depth * w, f) / _pool(w, f).clamp(min=1e-6)
        logit = -_pool(-logit, f, "max")
    pts = geometry.fuse3d(depth, *fixed) if stage2 or cfg.w_chamfer > 0 else None
    if cfg.w_chamfer > 0:
        ls["chamfer"] = chamfer_loss(pts, logit.reshape(bsz, -1), b["surf"], cfg.chamfer_points)
        total = total + cfg.w_chamfer * ls["chamfer"]
    if stage2:
        nm = b["nmask"]
        r = geometry.render_depth(pts, logit.reshape(bsz, -1), b["nR"], b["nt"],
                                  nm.shape[-2], nm.shape[-1], upscale=cfg.upscale)
        ok = (r["collision"] == 1).float() * nm
        ls["novel_depth"] = ((r["depth"] - b["ndepth"]).abs() * ok).sum() / ok.sum().clamp(min=1)
        ls["novel_mask"] = F.binary_cross_entropy_with_logits(r["mask_logit"], nm)
        total = total + cfg.w_novel * (cfg.w_depth * ls["novel_depth"] + ls["novel_mask"])
    ls["total"] = total
    return ls


def _pool(x: torch.Tensor, f: int, kind: str = "avg") -> torch.Tensor:
    """f x f pooling over the last two dims of a (..., H, W) tensor of any rank."""
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    y = x.reshape(-1, 1, h, w)
    y = F.max_pool2d(y, f) if kind == "max" else F.avg_pool2d(y, f)
    return y.reshape(*lead, h // f, w // f)


def pinball(pred_q: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantile (pinball) loss of depth maps (B,V,Q,H,W) against (B,V,H,W), averaged over the Q levels
    and scaled so that Q=1 (the median) is exactly the L1 loss."""
    u = target.unsqueeze(2) - pred_q
    tau = levels.to(u).view(1, 1, -1, 1, 1)
    return (2 * torch.maximum(tau * u, (tau - 1) * u)).mean(2)


def net_cfg(net: torch.nn.Module) -> GeneratorConfig:
    return getattr(net, "module", net).cfg


def chamfer_loss(pts: torch.Tensor, logits: torch.Tensor, gt: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetric Chamfer between ``k`` fused points drawn in proportion to their predicted
    occupancy and the GT surface samples ``gt`` (B,M,3): the evaluation metric, as a loss on depth.

    Why it was tried: per-pixel L1 scores each view's depth on its own, Chamfer the fused cloud as
    a whole. Measured: it does not move the third-party score (model card, "Tried after v4").
    """
    with torch.no_grad():
        idx = torch.multinomial(torch.sigmoid(logits.float()) + 1e-6, k, replacement=True)
    p = pts.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3))
    with torch.no_grad():  # pairings only: cdist's own backward doubled the cost on CPU (1024 points)
        d = torch.cdist(p, gt)
        near_gt, near_p = d.min(2).indices, d.min(1).indices
    p2g = (p - gt.gather(1, near_gt.unsqueeze(-1).expand(-1, -1, 3))).norm(dim=-1).mean()
    g2p = (gt - p.gather(1, near_p.unsqueeze(-1).expand(-1, -1, 3))).norm(dim=-1).mean()
    return 0.5 * (p2g + g2p)


def generator_config(layout: str, overrides: str = "", res: tuple[int, int] = (64, 64)) -> GeneratorConfig:
    """The default generator for data rendered with ``layout`` at ``res`` (input crop, fixed-view
    maps), with "key=value,..." overrides."""
    fields: dict[str, Any] = {"views": geometry.LAYOUTS[layout], "layout": layout,
                              "in_res": res[0], "out_res": res[1]}
    types = {k: type(v) for k, v in GeneratorConfig().to_dict().items()}
    for item in filter(None, overrides.split(",")):
        key, _, value = (t.strip() for t in item.partition("="))
        if key not in types or key in ("views", "layout", "in_res", "out_res"):
            raise ValueError(f"--gen: unknown or fixed generator field {key!r} (fields: {sorted(types)})")
        fields[key] = _gen_value(key, value, types[key])
    return GeneratorConfig(**fields)


def _gen_value(key: str, text: str, kind: type) -> Any:
    """One ``--gen`` value: a yes/no for a flag, a name for a text field (the config checks it),
    else a finite positive number (all sizes)."""
    if kind is str:
        return text
    if kind is bool and text.lower() in ("1", "true", "yes", "0", "false", "no"):
        return text.lower() in ("1", "true", "yes")
    if kind is not bool:
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is not None and math.isfinite(v) and v > 0:
            return v
    what = "1/0, true/false or yes/no" if kind is bool else f"a positive {kind.__name__}"
    raise ValueError(f"--gen: {key}={text!r} must be {what}")


def _dist() -> tuple[int, int]:
    """(rank, world) under torchrun; (0, 1) otherwise."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def train(cfg: TrainConfig, gen_cfg: GeneratorConfig | None = None, resume: bool = True
          ) -> dict[str, Any]:
    """Train for ``cfg.minutes`` of wall time (resumable from ``out/state.pt``): stage 1 on the
    fixed views, stage 2 (the last ``stage2_frac``) adds novel views through the pseudo-renderer.
    Writes ``model.pt`` + card, ``history.csv``, ``loss.png`` and ``result.json`` into ``out``."""
    from .data.dataset import ShapeDataset

    rank, world = _dist()
    use_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    rng = np.random.default_rng([cfg.seed, rank])
    device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    src = _load_init(cfg.init, device)  # before the data: a bad --init is named, not hidden
    ds = ShapeDataset(cfg.data, "train", max_shapes=cfg.max_shapes)
    state_path = out / "state.pt"
    resuming = resume and state_path.exists()
    model = _build_model(cfg, src.cfg if src is not None else gen_cfg, ds.layout, device,
                         src if not resuming else None, ds.res)
    net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    fixed = tuple(x.to(device) for x in model.cfg.fixed_views())
    step, elapsed, history, legs = (_resume(state_path, model, opt, device, rng) if resuming
                                    else (0, 0.0, [], []))
    budget = cfg.minutes * 60.0
    t_start, last_ckpt = time.time() - elapsed, time.time()
    leg_end = min(budget, elapsed + cfg.leg_minutes * 60.0) if cfg.leg_minutes else budget
    legs.append({"leg": len(legs) + 1, "start_step": step, "start_minutes": round(elapsed / 60, 2)})
    bar = _progress_bar(budget, elapsed, rank)
    net.train()
    leg_stop = min(cfg.max_steps, step + cfg.leg_steps) if cfg.leg_steps else cfg.max_steps
    while step < leg_stop and (elapsed := time.time() - t_start) < leg_end:
        # whichever budget is nearer its end sets the schedule: time by default (CPU-first), steps
        # when --max-steps binds (A/B runs on a shared machine see the same schedule per step)
        frac = max(elapsed / budget, step / cfg.max_steps)
        stage2 = frac >= 1 - cfg.stage2_frac
        for g in opt.param_groups:  # cosine from lr to 1e-5 over the budget
            g["lr"] = 1e-5 + (cfg.lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * frac))
        ls = _train_step(net, opt, ds, cfg, rng, device, fixed, stage2)
        step += 1
        history.append([step, elapsed, ls["mask"].item(), ls["depth"].item(), ls["rgb"].item(),
                        ls["total"].item(), float(stage2)])
        _report(bar, rank, cfg, step, elapsed, ls["total"].item(), stage2)
        if rank == 0 and time.time() - last_ckpt > cfg.ckpt_every_s:
            _save_state(state_path, model, opt, step, time.time() - t_start, history, cfg, rng, legs)
            last_ckpt = time.time()
    if bar is not None:
        bar.close()
    elapsed = time.time() - t_start
    legs[-1].update(end_step=step, end_minutes=round(elapsed / 60, 2))
    done = step >= cfg.max_steps or elapsed >= budget
    result: dict[str, Any] = {"steps": step, "minutes": round(elapsed / 60, 2),
                              "samples_seen": step * cfg.batch * world, "finished": done, "legs": legs}
    if rank == 0:
        _save_state(state_path, model, opt, step, elapsed, history, cfg, rng, legs)
        _finish(cfg, model, out, np.array(history, dtype=np.float64), ds.n_shapes, result)
    return result


def _load_init(path: str | None, device: str) -> StructureGenerator | None:
    """The ``--init`` model (warm start), or None."""
    if not path:
        return None
    try:
        return checkpoint.load(path, device)[0]
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"--init: {exc}") from None


def _build_model(cfg: TrainConfig, gen_cfg: GeneratorConfig | None, layout: str, device: str,
                 src: StructureGenerator | None, res: tuple[int, int] = (64, 64)) -> StructureGenerator:
    """The generator to train: ``gen_cfg`` (``--init``'s config, a resumed run's too), else a new
    model drawing the fixed views the data has; ``src``'s weights when warm-starting."""
    if gen_cfg is None:
        gen_cfg = generator_config(layout, cfg.gen, res)
    if gen_cfg.layout != layout:
        raise ValueError(f"{cfg.data} holds fixed views {layout!r} but the model draws {gen_cfg.layout!r}; "
                         f"make data with `image2points make-data --layout {gen_cfg.layout}`")
    if (gen_cfg.in_res, gen_cfg.out_res) != res:
        raise ValueError(f"{cfg.data} holds {res[0]}px inputs and {res[1]}px maps but the model takes "
                         f"{gen_cfg.in_res}px and draws {gen_cfg.out_res}px; make data with "
                         f"`image2points make-data --res {gen_cfg.out_res}`")
    model = StructureGenerator(gen_cfg).to(device)
    if src is not None:
        model.load_state_dict(src.state_dict())  # weights only, fresh schedule
        print(f"initialised from {cfg.init}")
    # NHWC: oneDNN's convolutions are ~17% faster per step on CPU (measured, batch 24)
    return model.to(memory_format=torch.channels_last)


def _resume(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, device: str,
            rng: np.random.Generator) -> tuple[int, float, list[list[float]], list[dict]]:
    """(step, elapsed seconds, loss history, legs) of a saved run; its weights, optimiser and (from
    states written since legs exist) the data-order and torch RNG states restored in place.
    Tensors and plain values only: a weights_only load."""
    st = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    if "rng" in st:
        rng.bit_generator.state = json.loads(st["rng"])
        torch.set_rng_state(st["torch_rng"])
    step, elapsed = int(st["step"]), float(st["elapsed"])
    print(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    return step, elapsed, st["history"].tolist(), json.loads(st.get("legs", "[]"))


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was started with (``--resume``), from its ``state.pt``."""
    path = Path(run_dir) / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"--resume: no saved state in {run_dir} (state.pt)")
    st = torch.load(path, map_location="cpu", weights_only=True)
    if "config" not in st:
        raise ValueError(f"--resume: {path} predates saved configs; rerun with the original flags "
                         f"and --out {run_dir} instead")
    fields = json.loads(st["config"])
    return TrainConfig(**{k: v for k, v in fields.items() if k in TrainConfig.__dataclass_fields__})


def _progress_bar(budget: float, elapsed: float, rank: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=int(budget), initial=int(elapsed), unit="s", disable=rank != 0, desc="train",
                mininterval=2.0)


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, ds: Any, cfg: TrainConfig,
                rng: np.random.Generator, device: str, fixed: tuple[torch.Tensor, ...],
                stage2: bool) -> dict[str, torch.Tensor]:
    """One optimiser step on a random batch (novel views only in stage 2); the losses."""
    idx = rng.integers(0, len(ds), cfg.batch)
    surf = cfg.chamfer_points if cfg.w_chamfer > 0 else 0
    b = {k: v.to(device) for k, v in ds.batch(idx, novel=cfg.novel if stage2 else 0, rng=rng,
                                                mirror=cfg.mirror, surf=surf).items()}
    ls = losses(net, b, cfg, stage2, fixed)
    opt.zero_grad(set_to_none=True)
    ls["total"].backward()
    opt.step()
    return ls


def _report(bar: Any, rank: int, cfg: TrainConfig, step: int, elapsed: float, loss: float,
            stage2: bool) -> None:
    if bar is not None:
        bar.n = int(min(elapsed, cfg.minutes * 60.0))
        bar.set_postfix(step=step, stage=2 if stage2 else 1, loss=f"{loss:.3f}", refresh=False)
        bar.update(0)
    elif rank == 0 and step % cfg.log_every == 0:
        print(f"step {step} {elapsed:.0f}s loss {loss:.4f}", flush=True)


def _finish(cfg: TrainConfig, model: StructureGenerator, out: Path, hist: np.ndarray,
            n_shapes: int, result: dict[str, Any]) -> None:
    """The checkpoint with its card, the loss history (csv + plot) and result.json."""
    # the stage-1 objective (fixed views) is comparable across the run; the total is not,
    # since stage 2 adds the novel-view terms
    s1 = hist[:, 2] + cfg.w_depth * hist[:, 3] + cfg.w_rgb * hist[:, 4]
    result.update(first_loss=_smooth(s1, 0), last_loss=_smooth(s1, -1),
                  first_total=_smooth(hist[:, 5], 0), last_total=_smooth(hist[:, 5], -1))
    card = {"name": Path(cfg.out).name, "trained": time.strftime("%Y-%m-%d"),
            "train_config": asdict(cfg), "train_result": result,
            "summary": f"{result['steps']} steps, {result['minutes']} min, {n_shapes} training shapes"}
    checkpoint.save(model, out / "model.pt", card)
    np.savetxt(out / "history.csv", hist, delimiter=",", fmt="%.6g",
               header="step,seconds,mask,depth,rgb,total,stage2")
    plot_history(hist, out / "loss.png")
    (out / "result.json").write_text(json.dumps(result, indent=2))


def _smooth(x: np.ndarray, at: int, n: int = 20) -> float:
    seg = x[:n] if at == 0 else x[-n:]
    return float(np.mean(seg))


def _save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                elapsed: float, history: list, cfg: TrainConfig, rng: np.random.Generator,
                legs: list[dict]) -> None:
    """Everything a leg needs to go on exactly; plain values and tensors (JSON strings for the
    config, the numpy RNG state and the legs), so ``_resume`` loads it weights_only."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "elapsed": elapsed, "history": torch.tensor(history, dtype=torch.float64),
                "config": json.dumps(asdict(cfg)), "rng": json.dumps(rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(), "legs": json.dumps(legs)}, tmp)
    tmp.replace(path)


def plot_history(hist: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    k = max(1, len(hist) // 200)
    for col, name in ((2, "mask BCE"), (3, "depth L1"), (4, "colour L1"), (5, "total")):
        y = np.convolve(hist[:, col], np.ones(k) / k, mode="valid")
        ax.plot(hist[k - 1:, 0], y, label=name)
    s2 = np.flatnonzero(hist[:, 6] > 0)
    if len(s2):
        ax.axvline(hist[s2[0], 0], color="grey", ls="--", label="stage 2 starts")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def install(run_dir: str | Path, name: str = "default") -> Path:
    """Copy a run's model + card into backend/weights/ (the shipped default)."""
    from .model.reconstruct import WEIGHTS_DIR

    src = Path(run_dir) / "model.pt"
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    dst = WEIGHTS_DIR / f"{name}.pt"
    dst.write_bytes(src.read_bytes())
    card = json.loads(checkpoint.card_path(src).read_text())
    card["file"] = dst.name
    checkpoint.card_path(dst).write_text(json.dumps(card, indent=2) + "\n")
    return dst


SMOKE = dict(minutes=1.0, batch=8, max_shapes=40, stage2_frac=0.3, log_every=10)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the structure generator (two stages)")
    p.add_argument("--data", default="data")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--minutes", type=pos_float, default=None,
                   help=f"wall-clock budget (default {TrainConfig.minutes:g}; with --smoke {SMOKE['minutes']:g})")
    p.add_argument("--max-steps", type=pos_int, default=TrainConfig.max_steps)
    p.add_argument("--batch", type=pos_int, default=TrainConfig.batch)
    p.add_argument("--lr", type=pos_float, default=TrainConfig.lr)
    p.add_argument("--threads", type=pos_int, default=TrainConfig.threads)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--max-shapes", type=pos_int, default=None)
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from a checkpoint's weights (e.g. backend/weights/default.pt)")
    p.add_argument("--fresh", action="store_true", help="ignore a saved state in --out")
    p.add_argument("--leg-minutes", type=pos_float, default=None,
                   help="stop this leg after this much wall time (state saved); go on with --resume")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue RUN's saved state with its own config (only --leg-minutes, "
                        "--threads and --install are taken from this command line)")
    p.add_argument("--stage2-frac", type=fraction, default=TrainConfig.stage2_frac,
                   help="last fraction of the budget that adds the novel-view (pseudo-renderer) loss")
    p.add_argument("--w-novel", type=nonneg_float, default=TrainConfig.w_novel, help="weight of that loss")
    p.add_argument("--mirror", type=fraction, default=TrainConfig.mirror,
                   help="fraction of each batch mirrored left-right (augmentation; 0 = off)")
    p.add_argument("--w-chamfer", type=nonneg_float, default=TrainConfig.w_chamfer,
                   help="weight of a 3D Chamfer loss on the fused cloud (0 = off)")
    p.add_argument("--gen", default="", metavar="K=V,..",
                   help="generator overrides for a new model, e.g. align=0 (ablations)")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (about 2 minutes)")
    p.add_argument("--install", action="store_true",
                   help="copy the result to backend/weights/default.pt (the shipped model)")
    p.set_defaults(func=run)


def make_config(smoke: bool = False, minutes: float | None = None, **fields: Any) -> TrainConfig:
    """The config a command line means: defaults < ``fields`` < the smoke preset < an explicit
    ``minutes`` (so ``--smoke --minutes 0.2`` is a shorter smoke run)."""
    cfg = TrainConfig(**fields)
    if smoke:
        cfg = TrainConfig(**{**asdict(cfg), **SMOKE})
    if minutes is not None:
        cfg.minutes = minutes
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.resume:
        try:
            cfg = saved_config(args.resume)
        except (FileNotFoundError, ValueError) as exc:
            return err(str(exc), "image2points train")
        cfg.out, cfg.leg_minutes, cfg.threads = args.resume, args.leg_minutes, args.threads
    else:
        cfg = make_config(args.smoke, args.minutes, data=args.data, out=args.out,
                          max_steps=args.max_steps, batch=args.batch, lr=args.lr,
                          threads=args.threads, seed=args.seed, max_shapes=args.max_shapes,
                          init=args.init, gen=args.gen, mirror=args.mirror,
                          stage2_frac=args.stage2_frac, w_novel=args.w_novel,
                          w_chamfer=args.w_chamfer, leg_minutes=args.leg_minutes)
    try:  # before minutes of training, not after: a --gen typo, an unwritable --out
        generator_config(GeneratorConfig.layout, cfg.gen)
    except ValueError as exc:
        return err(str(exc), "image2points train")
    reason = writable_dir(cfg.out, "--out")
    if reason:
        return err(reason, "image2points train")
    try:
        result = train(cfg, resume=bool(args.resume) or not args.fresh)
    except (FileNotFoundError, ValueError) as exc:  # no data, a bad --init, data and model disagree
        return err(str(exc), "image2points train")
    except OSError as exc:
        return err(why(exc), "image2points train")
    print(json.dumps(result, indent=2))
    if args.install:
        try:
            print(f"installed {install(cfg.out)}")
        except OSError as exc:
            return err(f"trained, but not installed: {why(exc)}", "image2points train")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m image2points.backend.train")
    register(parser.add_subparsers(dest="command", required=True))
    sys.exit(run(parser.parse_args(["train", *sys.argv[1:]])))
