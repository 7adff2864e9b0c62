"""``image2points eval-mask``: how well the automatic cut finds the object in photo-like images.

Every method runs on the same composites (``backend.data.photos``: held-out procedural objects and
never-trained-on shapes over real photographs, shaded, shadowed, JPEG) in the same run: mean IoU
against the true mask, the fraction of images with IoU >= 0.9, the share flagged MASK_SUSPECT, and
the time per megapixel. With ``--e2e K``, the first K images are also reconstructed from the photo
(automatic cut) and from the same render with its true alpha, scored by Chamfer distance to the
object's surface.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

BAR_MEAN, BAR_FRAC = 0.90, 0.85


def methods() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from .segment import estimate_alpha, grabcut, net_cut, segment

    return {"segment (shipped)": segment, "net alone": lambda im: net_cut(im, refine=False),
            "grabcut (prior)": grabcut, "border rule (old)": estimate_alpha}


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    p = pred > 0.5
    return float((p & gt).sum() / max(1, (p | gt).sum()))


def evaluate(split: str, n: int, size: tuple[int, int], e2e: int = 0, checkpoint: str | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    from .data.photos import make_photo
    from .segment import cut_warnings

    ms = methods()
    scores: dict[str, list[float]] = {k: [] for k in ms}
    secs: dict[str, float] = dict.fromkeys(ms, 0.0)
    flagged: dict[str, int] = dict.fromkeys(ms, 0)
    pixels = 0
    e2e_rows: list[tuple[float, float]] = []
    model = None
    if e2e:
        from .model.reconstruct import Reconstructor

        model = Reconstructor.load(checkpoint)
    for i in range(n):
        ph = make_photo(split, i, size, surf_points=4096 if i < e2e else 0)
        pixels += ph.mask.size
        cut = None
        for k, fn in ms.items():
            t0 = time.perf_counter()
            m = fn(ph.image)
            secs[k] += time.perf_counter() - t0
            scores[k].append(iou(m, ph.mask))
            flagged[k] += bool(cut_warnings(m))
            if cut is None:
                cut = m
        if model is not None and i < e2e and cut is not None:
            e2e_rows.append(_e2e(model, ph, cut))
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{n} images")
    rows = {k: {"mean_iou": float(np.mean(v)), "frac_iou_0.9": float(np.mean(np.asarray(v) >= 0.9)),
                "flagged": flagged[k] / n, "s_per_mpx": secs[k] / (pixels / 1e6)}
            for k, v in scores.items()}
    first = next(iter(ms))
    fams = {"held-out procedural shapes": scores[first][0::2], "never-trained shape families": scores[first][1::2]}
    report: dict[str, Any] = {"split": split, "n": n, "size": list(size), "methods": rows,
                              "shipped_by_subset": {k: {"n": len(v), "mean_iou": float(np.mean(v)),
                                                        "frac_iou_0.9": float(np.mean(np.asarray(v) >= 0.9))}
                                                    for k, v in fams.items() if v and split == "eval"}}
    if e2e_rows:
        a = np.asarray(e2e_rows)
        report["e2e"] = {"n": len(a), "chamfer_photo": float(a[:, 0].mean()),
                         "chamfer_true_alpha": float(a[:, 1].mean()),
                         "ratio": float(a[:, 0].mean() / a[:, 1].mean())}
    return report


def _e2e(model: Any, ph: Any, cut: np.ndarray) -> tuple[float, float]:
    """Chamfer to the true surface of the reconstruction from the photo (automatic cut) and from
    the render with its true alpha; both clouds and the truth are centred and unit-scaled."""
    from .evaluate import metrics, normalise, subsample

    clouds = model.reconstruct_inputs(model.preprocess([ph.image, ph.rgba], [cut, None]))
    gt = normalise(ph.surf)
    return tuple(metrics(normalise(subsample(c.xyz)), gt)["chamfer"] for c in clouds)  # type: ignore[return-value]


def format_report(r: dict[str, Any]) -> str:
    lines = [f"eval-mask: {r['n']} composites of split '{r['split']}' ({r['size'][0]}x{r['size'][1]}), "
             "same run", f"{'method':20s} {'mean IoU':>9s} {'IoU>=0.9':>9s} {'flagged':>8s} {'s/Mpx':>7s}"]
    for k, m in r["methods"].items():
        lines.append(f"{k:20s} {m['mean_iou']:9.3f} {m['frac_iou_0.9']:9.1%} {m['flagged']:8.1%} "
                     f"{m['s_per_mpx']:7.3f}")
    for k, m in r.get("shipped_by_subset", {}).items():
        lines.append(f"  shipped, {k} ({m['n']}): mean IoU {m['mean_iou']:.3f}, IoU>=0.9 {m['frac_iou_0.9']:.1%}")
    best = next(iter(r["methods"].values()))
    ok = best["mean_iou"] >= BAR_MEAN and best["frac_iou_0.9"] >= BAR_FRAC
    lines.append(f"bar (mean IoU >= {BAR_MEAN}, >= {BAR_FRAC:.0%} with IoU >= 0.9): "
                 f"{'met' if ok else 'NOT met'}")
    if "e2e" in r:
        e = r["e2e"]
        lines.append(f"end to end ({e['n']} images): Chamfer from the photo {e['chamfer_photo']:.4f}, from "
                     f"the true alpha {e['chamfer_true_alpha']:.4f}, ratio {e['ratio']:.3f} "
                     f"({'within' if e['ratio'] <= 1.15 else 'NOT within'} 15%)")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("eval-mask", help="score the automatic foreground cut on photo-like composites")
    s.add_argument("--n", type=int, default=200, help="composites (default 200)")
    s.add_argument("--split", choices=["eval", "tune"], default="eval")
    s.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    s.add_argument("--e2e", type=int, default=0, metavar="K",
                   help="also reconstruct the first K from photo and from true alpha (Chamfer)")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--json", default=None, help="also write the report here")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.n <= 0 or min(args.size) < 32 or args.e2e < 0:
        print("image2points eval-mask: --n must be positive, --size at least 32, --e2e >= 0", file=sys.stderr)
        return 2
    from .threads import use_threads

    use_threads(1)
    try:
        report = evaluate(args.split, args.n, tuple(args.size), args.e2e, args.checkpoint)
    except (FileNotFoundError, OSError) as exc:
        print(f"image2points eval-mask: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0
