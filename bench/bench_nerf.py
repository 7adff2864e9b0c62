"""NeRF: fast grid field vs the (fixed) seed MLP, held-out PSNR at wall-clock checkpoints.

Both fit the project's own ``blocks`` scene (100x100, 100 training views, 20 held-out views on a
different orbit), one after the other, each with ONE torch thread (on a busy 2-core machine two
threads are much slower): the seed MLP for 5 minutes, the fast field for 2 (it passes the MLP's
final PSNR in seconds, so longer only costs bench time). Held-out PSNR (white background, mean
over views) is measured at fixed training-clock times; evaluation time is excluded from the clock.
The fast field is then scored for 2 minutes on ``gallery``, a scene never used for tuning.
Reported ratio: (time for the fast field to reach the MLP's 5-minute PSNR) / 300 s. The whole
benchmark takes about 11-12 minutes (9 of training), so ``image2points bench`` stays under 15.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from image2points.backend.threads import quiet_openmp, torch_threads

ROOT = Path(__file__).resolve().parents[1]


def _load(scene: str, size: int, n_train: int, n_test: int, samples: int, cache: Path):
    from image2points.backend.data.nerf_scene import make_scene
    from image2points.backend.nerf.dataset import load_transforms

    out = make_scene(scene, cache / (scene if size == 100 else f"{scene}-{size}"), width=size, n_train=n_train,
                     n_test=n_test, samples=samples, log=lambda s: print("  " + s, flush=True))
    return load_transforms(out, "train"), load_transforms(out, "test")


def _curve(train, test, field: str, minutes: float, checkpoints: list[float]) -> dict[str, Any]:
    from image2points.backend.nerf.training import FitConfig, evaluate, fit

    rows: list[dict[str, float]] = []

    def on_cp(t: float, step: int, f) -> None:
        p = evaluate(f, test)["psnr"]
        rows.append({"seconds": t, "step": step, "psnr": round(p, 3)})
        print(f"  {field:5s} {t:6.0f} s  step {step:6d}  held-out PSNR {p:6.2f} dB", flush=True)

    model = fit(train, FitConfig(field=field, minutes=minutes), checkpoints=checkpoints, on_checkpoint=on_cp)
    return {"field": field, "curve": rows, "steps": model.meta["steps"], "train_psnr": model.meta["train_psnr"]}


def _time_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """First time the (linearly interpolated) curve reaches ``target``; None if never."""
    prev_t, prev_p = 0.0, -np.inf
    for r in curve:
        if r["psnr"] >= target:
            if not np.isfinite(prev_p):
                return r["seconds"]
            return prev_t + (target - prev_p) / (r["psnr"] - prev_p) * (r["seconds"] - prev_t)
        prev_t, prev_p = r["seconds"], r["psnr"]
    return None


def _baselines(train, test) -> dict[str, float]:
    from image2points.backend.nerf.training import psnr

    gt = test.rgb_on((1.0, 1.0, 1.0))
    mean_img = train.rgb_on((1.0, 1.0, 1.0)).mean(0)
    return {"all_white": round(float(np.mean([psnr(np.ones_like(g), g) for g in gt])), 3),
            "mean_train_image": round(float(np.mean([psnr(mean_img, g) for g in gt])), 3)}


def run(quick: bool) -> dict:
    quiet_openmp()
    with torch_threads(1):
        return _run(quick)


def _run(quick: bool) -> dict:
    if quick:
        cache = Path(tempfile.gettempdir()) / "i2p-nerf-bench"
        size, n_train, n_test, samples, minutes = 32, 20, 4, 16, 0.1
        fast_min = unseen_min = minutes
        cps = [2.0, 4.0, 6.0]
        dense = cps
    else:
        cache = ROOT / "data" / "nerf"
        size, n_train, n_test, samples, minutes = 100, 100, 20, 64, 5.0
        fast_min, unseen_min = 2.0, 2.0
        cps = [30.0, 60.0, 120.0, 180.0, 300.0]
        dense = [5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    train, test = _load("blocks", size, n_train, n_test, samples, cache)
    result: dict[str, Any] = {"scene": f"blocks {size}x{size}, {len(train)} train / {len(test)} held-out views",
                              "torch_threads": 1, "loadavg_before": [round(x, 2) for x in load0],
                              "baselines": _baselines(train, test)}
    fast = _curve(train, test, "fast", fast_min, dense)
    mlp = _curve(train, test, "mlp", minutes, cps)
    mlp_final = mlp["curve"][-1]["psnr"]
    reach = _time_to_reach(fast["curve"], mlp_final)
    budget = minutes * 60.0
    fast_best_5min = max((r["psnr"] for r in fast["curve"] if r["seconds"] <= 300.0), default=None)
    result.update({"fast": fast, "mlp": mlp, "mlp_final_psnr": mlp_final,
                   "minutes": {"fast": fast_min, "mlp": minutes, "unseen_fast": unseen_min},
                   "fast_best_psnr_within_5min": fast_best_5min,
                   "fast_seconds_to_mlp_final": None if reach is None else round(reach, 2),
                   "ratio_fast_time_to_mlp_final_over_budget": None if reach is None else round(reach / budget, 4)})
    load_mid = os.getloadavg()
    u_train, u_test = _load("gallery", size, n_train, n_test, samples, cache)
    unseen = _curve(u_train, u_test, "fast", unseen_min, [c for c in cps if c <= unseen_min * 60])
    unseen["baselines"] = _baselines(u_train, u_test)
    result["unseen_gallery_fast"] = unseen
    result["loadavg_mid"] = [round(x, 2) for x in load_mid]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)

    def cell(curve, s):  # the PSNR logged at checkpoint s, or "-" when the run ended before it
        return next((f"{r['psnr']:9.2f}" for r in curve if r["seconds"] == s), f"{'-':>9s}")

    print("\n  held-out PSNR (dB, white bg)  " + "".join(f"{int(c):>8d}s" for c in cps))
    for label, cur in (("fast (blocks)", fast["curve"]), ("mlp  (blocks)", mlp["curve"]),
                       ("fast (gallery, unseen)", unseen["curve"])):
        print(f"  {label:30s}" + "".join(cell(cur, c) for c in cps))
    print(f"  baselines blocks: {result['baselines']}, gallery: {unseen['baselines']}")
    print(f"  fast field's best held-out PSNR within 5 minutes: {fast_best_5min} dB (goal >= 28)")
    if reach is not None:
        print(f"  fast reaches the MLP's {minutes:g}-min PSNR ({mlp_final:.2f} dB) after {reach:.1f} s: "
              f"ratio {reach / budget:.4f} ({budget / reach:.0f}x sooner)")
    else:
        print(f"  fast never reached the MLP's {minutes:g}-min PSNR ({mlp_final:.2f} dB)")
    print(f"  loadavg before {result['loadavg_before']}, mid {result['loadavg_mid']}, "
          f"after {result['loadavg_after']}")
    return result


if __name__ == "__main__":
    import json
    import sys

    res = run(quick="--quick" in sys.argv)
    print(json.dumps({k: v for k, v in res.items() if k not in ("fast", "mlp", "unseen_gallery_fast")}, indent=1))
