"""Fit a field to posed images under a time/step budget; render; save/load (no pickle).

Why one module: the training loop, the evaluation it reports and the saved-model format must
agree on the same conventions (white evaluation background, box-bounded sampling, field config).

Clock: the budget is wall-clock seconds of training; time spent inside ``on_checkpoint``
callbacks (benchmark evaluations) is excluded, previews for the progress callback are included
(they are part of what a user waits for).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image2points.addon.core.nerf_capture import Intrinsics

from .dataset import NerfDataError, NerfDataset, estimate_aabb
from .fields import PRESETS, Field, GridField, build_field
from .rays import camera_rays, ray_aabb
from .rendering import render_rays

FORMAT = "image2points.nerf"
FORMAT_VERSION = 1
WHITE = (1.0, 1.0, 1.0)

ProgressFn = Callable[[float, str, dict, "np.ndarray | None"], None]

# fit() keeps every training ray in memory (origins, directions, RGBA targets, and the copies made
# while dropping the rays that miss the box): measured ~93-103 bytes per pixel of RSS growth in
# fit() (6.4 Mpx and up, CPU), on top of the 16 B/px float RGBA images parse_frames holds. 64 Mi
# pixels is therefore ~7.3 GB in all, what a 16 GB machine can spare; it admits the 100 800x800
# views of a NeRF-synthetic scene (64.0 Mpx). Bigger fits are refused up front (TOO_LARGE on the
# server, a one-line error in the CLI) instead of swapping or being killed by the OOM killer.
MAX_FIT_PIXELS = 64 * 2**20


class FitTooLarge(ValueError):
    """More training pixels than ``MAX_FIT_PIXELS`` (a size budget, not a data error)."""


class Cancelled(Exception):
    """Raised by ``render_image``/``extract_points`` when their ``should_stop()`` says so."""


def check_fit_size(n_images: int, width: int, height: int) -> None:
    """Raise ``FitTooLarge`` when ``n_images`` views of ``width`` x ``height`` exceed the budget."""
    total = int(n_images) * int(width) * int(height)
    if total > MAX_FIT_PIXELS:
        raise FitTooLarge(
            f"{n_images} images of {width} x {height} are {total / 1e6:.1f} Mpx, more than the "
            f"{MAX_FIT_PIXELS / 1e6:.1f} Mpx a fit may hold in memory (~110 bytes per pixel); "
            "use fewer or smaller images")


@dataclass
class FitConfig:
    """Training settings; ``None`` means the field preset's default."""

    field: str = "fast"
    minutes: float | None = None
    steps: int | None = None
    batch_rays: int | None = None
    lr: float | None = None
    seed: int = 0
    # grid only: (step, voxels) coarse-to-fine stages
    stages: list[tuple[int, int]] | None = None
    occ_every: int = 32
    tv_weight: float = 0.0
    lr_decay_start: float = 0.5   # fraction of the budget after which lr decays ...
    lr_decay_final: float = 0.1   # ... exponentially to this factor at the end
    preview_every_s: float = 5.0
    preview_size: int = 64
    patience_steps: int | None = None  # early stop when the smoothed train PSNR stalls this long
    target_psnr: float | None = None   # early stop when the smoothed train PSNR reaches this
    field_overrides: dict[str, Any] = dc_field(default_factory=dict)


DEFAULTS: dict[str, dict[str, Any]] = {
    "grid": {"batch_rays": 4096, "lr": 0.1,
             "stages": [(0, 40 ** 3), (250, 80 ** 3), (900, 150 ** 3)]},
    "mlp": {"batch_rays": 1024, "lr": 1e-3},
}


@dataclass
class NerfModel:
    """A fitted field plus what is needed to use it later (cameras, intrinsics, fit stats)."""

    field: Field
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# rendering / metrics


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def render_image(field: Field, c2w: np.ndarray | torch.Tensor, intr: Intrinsics,
                 background: tuple[float, float, float] = WHITE, chunk: int = 8192,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
    """Render one camera: rgb (H,W,3) float in [0,1] on ``background``, acc (H,W), depth (H,W).

    ``should_stop()`` is checked before every chunk of rays; when true, ``Cancelled`` is raised."""
    dev = field.aabb.device
    o, d = camera_rays(torch.as_tensor(np.asarray(c2w), dtype=torch.float32, device=dev), intr)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    bg = torch.tensor(background, dtype=torch.float32, device=dev)
    outs: dict[str, list] = {"rgb": [], "acc": [], "depth": []}
    for i in range(0, o.shape[0], chunk):
        if should_stop is not None and should_stop():
            raise Cancelled("rendering cancelled")
        r = render_rays(field, o[i:i + chunk], d[i:i + chunk], bg)
        for k in outs:
            outs[k].append(r[k])
    h, w = intr.h, intr.w
    return {"rgb": torch.cat(outs["rgb"]).reshape(h, w, 3).clamp(0, 1).cpu().numpy(),
            "acc": torch.cat(outs["acc"]).reshape(h, w).cpu().numpy(),
            "depth": torch.cat(outs["depth"]).reshape(h, w).cpu().numpy()}


def evaluate(field: Field, data: NerfDataset, max_images: int | None = None) -> dict[str, Any]:
    """Mean per-image PSNR on white (GT composited on white too), as the research protocol says."""
    was = field.training
    field.eval()
    gt = data.rgb_on(WHITE)
    vals = []
    n = len(data) if max_images is None else min(len(data), max_images)
    for i in range(n):
        vals.append(psnr(render_image(field, data.c2w[i], data.intrinsics)["rgb"], gt[i]))
    field.train(was)
    return {"psnr": float(np.mean(vals)), "psnr_per_image": vals}


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# fitting


def make_field(preset: str, aabb: np.ndarray, overrides: dict[str, Any] | None = None,
               n_voxels: int | None = None) -> Field:
    if preset not in PRESETS:
        raise ValueError(f"unknown field {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    cfg["aabb"] = np.asarray(aabb, dtype=np.float64).tolist()
    cfg.update(overrides or {})
    if cfg["kind"] == "grid" and n_voxels is not None:
        cfg.setdefault("n_voxels", n_voxels)
    return build_field(cfg)


def _make_optimizer(field: Field, lr: float) -> torch.optim.Optimizer:
    if isinstance(field, GridField):
        return torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.99))
    return torch.optim.Adam(field.parameters(), lr=lr)


def fit(data: NerfDataset, config: FitConfig | None = None, *, device: torch.device | str = "cpu",
        progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
        checkpoints: list[float] | None = None,
        on_checkpoint: Callable[[float, int, Field], None] | None = None) -> NerfModel:
    """Fit ``config.field`` to ``data`` until the time/step budget, cancel or early stop.

    ``progress(fraction, stage, metrics, preview)`` is called a few times per second at most,
    with a small preview render (uint8 HxWx3) every ``preview_every_s`` seconds.
    ``should_stop()`` is checked every step; a cancelled fit still returns the model so far
    (``meta['stopped'] == 'cancelled'``). ``on_checkpoint(train_seconds, step, field)`` runs at
    the given training-clock times; its own duration is not counted.

    Raises ``FitTooLarge`` above ``MAX_FIT_PIXELS`` and ``NerfDataError`` when the scene box cannot
    be estimated or no training ray passes through it.
    """
    cfg = config or FitConfig()
    if cfg.minutes is None and cfg.steps is None:
        raise ValueError("give a time budget (minutes) or a step budget (steps)")
    check_fit_size(len(data), data.intrinsics.w, data.intrinsics.h)
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    aabb = data.aabb if data.aabb is not None else estimate_aabb(data.c2w, data.intrinsics)
    kind = PRESETS.get(cfg.field, {}).get("kind", "grid")
    d = DEFAULTS[kind]
    batch = cfg.batch_rays or d["batch_rays"]
    lr0 = cfg.lr or d["lr"]
    stages = list(cfg.stages or d.get("stages") or [])
    final_voxels = stages[-1][1] if stages else None
    overrides = dict(cfg.field_overrides)
    if kind == "grid" and final_voxels:
        overrides.setdefault("final_voxels", final_voxels)
        overrides.setdefault("n_voxels", stages[0][1])
    field = make_field(cfg.field, aabb, overrides).to(device)
    field.train()
    opt = _make_optimizer(field, lr0)
    next_stage = 1

    # all training rays that can see the box, with their RGBA targets
    c2w = torch.as_tensor(data.c2w, dtype=torch.float32)
    o, dirs = camera_rays(c2w[:, None, None], data.intrinsics)  # (N,H,W,3)
    o, dirs = o.reshape(-1, 3), dirs.reshape(-1, 3)
    target = torch.as_tensor(data.images.reshape(-1, 4))
    if field.bounds == "aabb":
        keep = ray_aabb(o, dirs, field.aabb.cpu())[2]
        o, dirs, target = o[keep], dirs[keep], target[keep]
    o, dirs, target = o.to(device), dirs.to(device), target.to(device)
    n_rays = o.shape[0]
    if n_rays == 0:
        box = np.round(field.aabb.cpu().numpy(), 4).tolist()
        raise NerfDataError(f"no camera ray passes through the aabb {box}: the box is not in front of "
                            "any camera; fix or remove the 'aabb' (scene box, world units)")
    random_bg = data.has_alpha

    budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else math.inf
    budget_steps = cfg.steps if cfg.steps is not None else 10 ** 12
    pending = sorted(checkpoints or [])
    excluded = 0.0
    t_start = time.perf_counter()
    last_report = last_preview = -1e9
    ema = None
    best, best_step = -1.0, 0
    stopped = "budget"
    step = 0
    history: list[dict[str, float]] = []

    def clock() -> float:
        return time.perf_counter() - t_start - excluded

    while True:
        el = clock()
        frac = min(1.0, max(el / budget_s, step / budget_steps))
        while pending and el >= pending[0]:
            cp = pending.pop(0)
            if on_checkpoint is not None:
                t0 = time.perf_counter()
                on_checkpoint(cp, step, field)
                excluded += time.perf_counter() - t0
        if step >= budget_steps or el >= budget_s:
            break
        if should_stop is not None and should_stop():
            stopped = "cancelled"
            break
        # coarse-to-fine
        if isinstance(field, GridField) and next_stage < len(stages) and step >= stages[next_stage][0]:
            field.upsample(stages[next_stage][1])
            next_stage += 1
            opt = _make_optimizer(field, lr0)
        if isinstance(field, GridField) and step % cfg.occ_every == 0 and step > 0:
            field.update_occupancy()
        lr = lr0
        if frac > cfg.lr_decay_start:
            lr = lr0 * cfg.lr_decay_final ** ((frac - cfg.lr_decay_start) / (1.0 - cfg.lr_decay_start))
        for g in opt.param_groups:
            g["lr"] = lr

        idx = torch.randint(0, n_rays, (batch,), generator=gen).to(device)
        tgt = target[idx]
        bg = (torch.rand((batch, 3), generator=gen).to(device) if random_bg
              else torch.ones((batch, 3), device=device))
        gt = tgt[:, :3] * tgt[:, 3:] + bg * (1.0 - tgt[:, 3:])
        out = render_rays(field, o[idx], dirs[idx], bg, jitter=True, generator=gen)
        mse = torch.mean((out["rgb"] - gt) ** 2)
        loss = mse
        if cfg.tv_weight > 0 and isinstance(field, GridField):
            loss = loss + cfg.tv_weight * field.total_variation()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1

        p = -10.0 * math.log10(max(float(mse.detach()), 1e-10))
        ema = p if ema is None else 0.98 * ema + 0.02 * p
        if ema > best + 0.05:
            best, best_step = ema, step
        if cfg.target_psnr is not None and ema >= cfg.target_psnr:
            stopped = "target"
            break
        if cfg.patience_steps is not None and step - best_step > cfg.patience_steps:
            stopped = "plateau"
            break
        now = clock()
        if progress is not None and now - last_report >= 0.5:
            last_report = now
            preview = None
            if now - last_preview >= cfg.preview_every_s:
                last_preview = now
                preview = _preview(field, data, cfg.preview_size)
            metrics = {"step": step, "train_psnr": round(ema, 3), "seconds": round(now, 2), "lr": lr,
                       "samples_per_ray": round(float(out["n_samples"]) / batch, 1)}
            progress(frac, "fit", metrics, preview)
            history.append({"step": step, "seconds": now, "train_psnr": ema})

    field.eval()
    if isinstance(field, GridField):
        field.update_occupancy()
    meta = {
        "field": cfg.field,
        "intrinsics": intrinsics_meta(data.intrinsics),
        "train_c2w": np.asarray(data.c2w, dtype=np.float64).round(6).tolist(),
        "steps": step,
        "seconds": round(clock(), 2),
        "train_psnr": round(ema or 0.0, 3),
        "stopped": stopped,
        "fit_config": {k: v for k, v in asdict(cfg).items() if k != "field_overrides"},
    }
    if progress is not None:
        progress(1.0, "done", {"step": step, "train_psnr": round(ema or 0.0, 3), "stopped": stopped}, None)
    return NerfModel(field, meta)


def _preview(field: Field, data: NerfDataset, size: int) -> np.ndarray:
    intr = data.intrinsics
    s = min(1.0, size / max(intr.w, intr.h))
    small = intr.scaled(max(1, round(intr.w * s)), max(1, round(intr.h * s)))
    was = field.training
    field.eval()
    img = render_image(field, data.c2w[0], small)["rgb"]
    field.train(was)
    return to_uint8(img)


# ---------------------------------------------------------------------------------------------
# saving: a dict of tensors + JSON strings, readable with torch.load(weights_only=True)


def intrinsics_meta(intr: Intrinsics) -> dict[str, float]:
    """The intrinsics as saved models (format version 1) store them."""
    return {"fx": intr.fl_x, "fy": intr.fl_y, "cx": intr.cx, "cy": intr.cy, "width": intr.w, "height": intr.h}


def intrinsics_from_meta(d: dict[str, Any]) -> Intrinsics:
    return Intrinsics(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]))


def model_to_bytes(model: NerfModel, half: bool = False) -> bytes:
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() and v.numel() > 4096 else v.detach().cpu())
             for k, v in model.field.state_dict().items()}
    blob = {"format": FORMAT, "version": FORMAT_VERSION, "config": json.dumps(model.field.config()),
            "meta": json.dumps(model.meta), "state": state}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


def model_from_bytes(data: bytes, device: torch.device | str = "cpu") -> NerfModel:
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"not a NeRF model file ({e.__class__.__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError("not an Image2Points NeRF model (format tag missing)")
    if int(blob.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"model format version {blob['version']} is newer than this backend ({FORMAT_VERSION})")
    field = build_field(json.loads(blob["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
    field.load_state_dict(state)
    field.to(device).eval()
    return NerfModel(field, json.loads(blob["meta"]))


def save_model(model: NerfModel, path: str | Path, half: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_to_bytes(model, half=half))
    return path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> NerfModel:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: model file not found")
    return model_from_bytes(p.read_bytes(), device)
