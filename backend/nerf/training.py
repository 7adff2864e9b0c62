"""Fit a field to posed images under a time/step budget; evaluate; save/load (no pickle).

Why one module: the training loop, the evaluation it reports and the saved-model format must
agree on the same conventions (white evaluation background, box-bounded sampling, field config).
``fit`` reads as its steps: plan the preset, make the field, gather the training rays, then
``_Run.train`` loops checkpoint -> coarse-to-fine -> learning rate -> step -> early stop -> report,
and ``_Run.finish`` returns the model with its metadata.

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
from .rendering import WHITE, render_image, render_rays, to_uint8

FORMAT = "image2points.nerf"
FORMAT_VERSION = 1

ProgressFn = Callable[[float, str, dict, "np.ndarray | None"], None]

# fit() keeps every training ray in memory (origins, directions, RGBA targets, and the copies made
# while dropping the rays that miss the box): measured ~93-103 bytes per pixel of RSS growth in
# fit() (6.4 Mpx and up, CPU), on top of the 16 B/px float RGBA images the dataset holds. 64 Mi
# pixels is therefore ~7.3 GB in all, what a 16 GB machine can spare; it admits the 100 800x800
# views of a NeRF-synthetic scene (64.0 Mpx). Bigger fits are refused up front (TOO_LARGE on the
# server, a one-line error in the CLI) instead of swapping or being killed by the OOM killer.
MAX_FIT_PIXELS = 64 * 2**20


class FitTooLarge(ValueError):
    """More training pixels than ``MAX_FIT_PIXELS`` (a size budget, not a data error)."""


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
# metrics


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


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
    plan = _Plan.of(cfg)
    aabb = data.aabb if data.aabb is not None else estimate_aabb(data.c2w, data.intrinsics)
    field = make_field(cfg.field, aabb, plan.overrides).to(device)
    field.train()
    run = _Run(cfg, plan, data, field, _training_rays(data, field, device), gen, progress)
    stopped = run.train(should_stop, sorted(checkpoints or []), on_checkpoint)
    return run.finish(stopped)


@dataclass
class _Plan:
    """The preset's batch size, learning rate and coarse-to-fine stages, overridden by the config."""

    batch: int
    lr0: float
    stages: list[tuple[int, int]]
    overrides: dict[str, Any]

    @staticmethod
    def of(cfg: FitConfig) -> _Plan:
        kind = PRESETS.get(cfg.field, {}).get("kind", "grid")
        d = DEFAULTS[kind]
        stages = list(cfg.stages or d.get("stages") or [])
        overrides = dict(cfg.field_overrides)
        if kind == "grid" and stages and stages[-1][1]:
            overrides.setdefault("final_voxels", stages[-1][1])
            overrides.setdefault("n_voxels", stages[0][1])
        return _Plan(cfg.batch_rays or d["batch_rays"], cfg.lr or d["lr"], stages, overrides)


@dataclass
class _Rays:
    """Every training ray that can see the scene box, with its RGBA target, on the device."""

    origins: torch.Tensor
    dirs: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.origins.shape[0])


def _training_rays(data: NerfDataset, field: Field, device: torch.device) -> _Rays:
    c2w = torch.as_tensor(data.c2w, dtype=torch.float32)
    o, dirs = camera_rays(c2w[:, None, None], data.intrinsics)  # (N,H,W,3)
    o, dirs = o.reshape(-1, 3), dirs.reshape(-1, 3)
    target = torch.as_tensor(data.images.reshape(-1, 4))
    if field.bounds == "aabb":
        keep = ray_aabb(o, dirs, field.aabb.cpu())[2]
        o, dirs, target = o[keep], dirs[keep], target[keep]
    if o.shape[0] == 0:
        box = np.round(field.aabb.cpu().numpy(), 4).tolist()
        raise NerfDataError(f"no camera ray passes through the aabb {box}: the box is not in front of "
                            "any camera; fix or remove the 'aabb' (scene box, world units)")
    return _Rays(o.to(device), dirs.to(device), target.to(device))


class _Run:
    """One fit's loop state: the clock, the optimizer, the smoothed train PSNR, the reports."""

    def __init__(self, cfg: FitConfig, plan: _Plan, data: NerfDataset, field: Field, rays: _Rays,
                 gen: torch.Generator, progress: ProgressFn | None) -> None:
        self.cfg, self.plan, self.data, self.field, self.rays = cfg, plan, data, field, rays
        self.gen, self.progress = gen, progress
        self.device = rays.origins.device
        self.random_bg = data.has_alpha  # transparent pixels: composite on a random colour
        self.opt = _make_optimizer(field, plan.lr0)
        self.next_stage = 1
        self.budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else math.inf
        self.budget_steps = cfg.steps if cfg.steps is not None else 10 ** 12
        self.step = 0
        self.ema: float | None = None
        self.best, self.best_step = -1.0, 0
        self.excluded = 0.0  # seconds spent in on_checkpoint callbacks
        self.last_report = self.last_preview = -1e9
        self.t_start = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self.t_start - self.excluded

    def train(self, should_stop: Callable[[], bool] | None, pending: list[float],
              on_checkpoint: Callable[[float, int, Field], None] | None) -> str:
        """Step until the budget, a cancel or an early stop; returns why it stopped."""
        while True:
            el = self.clock()
            frac = min(1.0, max(el / self.budget_s, self.step / self.budget_steps))
            self.run_checkpoints(el, pending, on_checkpoint)
            if self.step >= self.budget_steps or el >= self.budget_s:
                return "budget"
            if should_stop is not None and should_stop():
                return "cancelled"
            self.coarse_to_fine()
            lr = self.set_lr(frac)
            mse, n_samples = self.train_step()
            early = self.track(mse)
            if early:
                return early
            self.report(frac, lr, n_samples)

    def run_checkpoints(self, el: float, pending: list[float],
                        on_checkpoint: Callable[[float, int, Field], None] | None) -> None:
        """Benchmark evaluations due at this training-clock time; their time is not counted."""
        while pending and el >= pending[0]:
            cp = pending.pop(0)
            if on_checkpoint is not None:
                t0 = time.perf_counter()
                on_checkpoint(cp, self.step, self.field)
                self.excluded += time.perf_counter() - t0

    def coarse_to_fine(self) -> None:
        """Grid fields: the next resolution stage (a fresh optimizer), occupancy refreshed."""
        field, stages = self.field, self.plan.stages
        if not isinstance(field, GridField):
            return
        if self.next_stage < len(stages) and self.step >= stages[self.next_stage][0]:
            field.upsample(stages[self.next_stage][1])
            self.next_stage += 1
            self.opt = _make_optimizer(field, self.plan.lr0)
        if self.step % self.cfg.occ_every == 0 and self.step > 0:
            field.update_occupancy()

    def set_lr(self, frac: float) -> float:
        """Constant, then exponential decay to ``lr_decay_final`` over the rest of the budget."""
        cfg, lr = self.cfg, self.plan.lr0
        if frac > cfg.lr_decay_start:
            lr = lr * cfg.lr_decay_final ** ((frac - cfg.lr_decay_start) / (1.0 - cfg.lr_decay_start))
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of random rays: render, photometric loss (+ TV), backward, optimizer step."""
        batch, gen, dev = self.plan.batch, self.gen, self.device
        idx = torch.randint(0, len(self.rays), (batch,), generator=gen).to(dev)
        tgt = self.rays.target[idx]
        bg = (torch.rand((batch, 3), generator=gen).to(dev) if self.random_bg
              else torch.ones((batch, 3), device=dev))
        gt = tgt[:, :3] * tgt[:, 3:] + bg * (1.0 - tgt[:, 3:])
        out = render_rays(self.field, self.rays.origins[idx], self.rays.dirs[idx], bg, jitter=True, generator=gen)
        mse = torch.mean((out["rgb"] - gt) ** 2)
        loss = mse
        if self.cfg.tv_weight > 0 and isinstance(self.field, GridField):
            loss = loss + self.cfg.tv_weight * self.field.total_variation()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return mse, out["n_samples"]

    def track(self, mse: torch.Tensor) -> str | None:
        """Update the smoothed train PSNR; "target" or "plateau" when it says stop early."""
        p = -10.0 * math.log10(max(float(mse.detach()), 1e-10))
        self.ema = p if self.ema is None else 0.98 * self.ema + 0.02 * p
        if self.ema > self.best + 0.05:
            self.best, self.best_step = self.ema, self.step
        if self.cfg.target_psnr is not None and self.ema >= self.cfg.target_psnr:
            return "target"
        if self.cfg.patience_steps is not None and self.step - self.best_step > self.cfg.patience_steps:
            return "plateau"
        return None

    def report(self, frac: float, lr: float, n_samples: torch.Tensor) -> None:
        """At most every 0.5 s: metrics, and a small preview every ``preview_every_s``."""
        now = self.clock()
        if self.progress is None or now - self.last_report < 0.5:
            return
        self.last_report = now
        preview = None
        if now - self.last_preview >= self.cfg.preview_every_s:
            self.last_preview = now
            preview = _preview(self.field, self.data, self.cfg.preview_size)
        metrics = {"step": self.step, "train_psnr": round(self.ema or 0.0, 3), "seconds": round(now, 2), "lr": lr,
                   "samples_per_ray": round(float(n_samples) / self.plan.batch, 1)}
        self.progress(frac, "fit", metrics, preview)

    def finish(self, stopped: str) -> NerfModel:
        """The fitted field in eval mode with what later use needs (cameras, intrinsics, stats)."""
        field, psnr_now = self.field, round(self.ema or 0.0, 3)
        field.eval()
        if isinstance(field, GridField):
            field.update_occupancy()
        meta = {
            "field": self.cfg.field,
            "intrinsics": intrinsics_meta(self.data.intrinsics),
            "train_c2w": np.asarray(self.data.c2w, dtype=np.float64).round(6).tolist(),
            "steps": self.step,
            "seconds": round(self.clock(), 2),
            "train_psnr": psnr_now,
            "stopped": stopped,
            "fit_config": {k: v for k, v in asdict(self.cfg).items() if k != "field_overrides"},
        }
        if self.progress is not None:
            self.progress(1.0, "done", {"step": self.step, "train_psnr": psnr_now, "stopped": stopped}, None)
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
