"""``image2points nerf ...``: make a scene, fit, render and export points from the command line.

The lead's ``backend/cli.py`` calls :func:`register`; ``python -m image2points.backend.nerf.cli nerf ...``
works on its own too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..cli_args import err, fraction, nonneg_int, pos_float, pos_int, why, writable_file
from ..threads import quiet_openmp, use_threads


def _threads(n: int | None) -> None:
    if n:
        use_threads(n)


def run_make_scene(args: argparse.Namespace) -> int:
    from ..data.nerf_scene import make_scene

    out = make_scene(args.name, args.out, seed=args.seed, width=args.size, n_train=args.train, n_test=args.test,
                     samples=args.samples, workers=args.workers, force=args.force)
    print(out)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .dataset import NerfDataError, cameras_from_transforms, load_transforms
    from .training import FitConfig, FitTooLarge, check_fit_size, evaluate, fit, save_model

    _threads(args.threads)
    if args.minutes is None and args.steps is None:
        args.minutes = 2.0
    try:
        cams, intr, _, _ = cameras_from_transforms(args.data, "train")  # the size, before decoding
        check_fit_size(len(cams), intr.w, intr.h)
        reason = writable_file(args.out, "--out")  # before minutes of fitting, not after
        if reason:
            return err(reason)
        data = load_transforms(args.data, "train")
    except (NerfDataError, FitTooLarge) as e:
        return err(str(e))
    cfg = FitConfig(field=args.field, minutes=args.minutes, steps=args.steps, seed=args.seed)
    bars: list = []  # made at the first progress call: an error before training shows no bar

    def progress(frac: float, stage: str, metrics: dict, preview) -> None:
        if not bars:
            bars.append(tqdm(total=1000, unit="‰", desc=f"fit {args.field}", dynamic_ncols=True))
        bar = bars[0]
        bar.n = int(frac * 1000)
        bar.set_postfix({k: metrics[k] for k in ("step", "train_psnr") if k in metrics})
        bar.refresh()

    try:
        model = fit(data, cfg, device=args.device, progress=progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (NerfDataError, FitTooLarge) as e:
        return err(str(e))
    finally:
        for bar in bars:
            bar.close()
    try:
        path = save_model(model, args.out, half=args.half)
    except OSError as e:
        return err(f"cannot save the model to {args.out}: {why(e)}")
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB): {model.meta['steps']} steps in "
          f"{model.meta['seconds']:.0f} s, train PSNR {model.meta['train_psnr']:.2f} dB")
    test = Path(args.data)
    if test.is_dir() and (test / "transforms_test.json").is_file():
        try:
            te = load_transforms(test, "test")
            score = evaluate(model.field, te)["psnr"]
        except (NerfDataError, OSError) as e:
            return err(f"model saved, but the held-out evaluation failed: {e}")
        print(f"held-out PSNR (white background, {len(te)} views): {score:.2f} dB")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from PIL import Image

    from .dataset import NerfDataError, cameras_from_transforms, load_transforms
    from .rendering import render_image, to_uint8
    from .training import load_model, psnr

    _threads(args.threads)
    try:
        model = load_model(args.model, args.device)
        c2w, intr, names, tf = cameras_from_transforms(args.transforms, "test")
    except (NerfDataError, OSError, ValueError) as e:
        return err(str(e))
    gt = None
    try:
        gt = load_transforms(tf).rgb_on((1.0, 1.0, 1.0))
    except NerfDataError:
        pass  # cameras only, no images: nothing to score against
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return err(f"cannot create the output folder {out}: {why(e)}")
    scores = []
    for i, (m, name) in enumerate(zip(c2w, names)):
        img = render_image(model.field, m, intr)["rgb"]
        dest = out / f"{Path(name).stem or f'r_{i:03d}'}.png"
        try:
            Image.fromarray(to_uint8(img)).save(dest)
        except OSError as e:
            return err(f"cannot write {dest}: {why(e)}")
        if gt is not None:
            scores.append(psnr(img, gt[i]))
    print(f"rendered {len(c2w)} views to {out}")
    if scores:
        print(f"PSNR vs ground truth (white background): mean {np.mean(scores):.2f} dB, "
              f"min {np.min(scores):.2f}, max {np.max(scores):.2f}")
    return 0


def run_points(args: argparse.Namespace) -> int:
    from ..ply import write_ply
    from .points import extract_points
    from .training import load_model

    _threads(args.threads)
    try:
        model = load_model(args.model, args.device)
        xyz, rgb = extract_points(model, max_points=args.max_points, acc_threshold=args.min_opacity)
    except (OSError, ValueError) as e:
        return err(str(e))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_ply(args.output, xyz, rgb, comment="Image2Points NeRF points (world frame, Z up)")
    except OSError as e:
        return err(f"cannot write {args.output}: {why(e)}")
    print(f"wrote {len(xyz)} points to {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``nerf`` with sub-commands make-scene / fit / render / points to a CLI."""
    p = sub.add_parser("nerf", help="NeRF from posed images (transforms.json): fit, render, points")
    ns = p.add_subparsers(dest="nerf_cmd", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
        q.add_argument("--threads", type=pos_int, default=None, help="torch CPU threads (1 is best on a busy 2-core box)")

    q = ns.add_parser("make-scene", help="render the project's own test scene with the bpy wheel")
    q.add_argument("--name", default="blocks", choices=("blocks", "gallery"))
    q.add_argument("--out", default=None, help="folder (default data/nerf/<name>)")
    q.add_argument("--size", type=pos_int, default=100)
    q.add_argument("--train", type=pos_int, default=100)
    q.add_argument("--test", type=nonneg_int, default=20)
    q.add_argument("--samples", type=pos_int, default=64, help="Cycles samples per pixel")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=pos_int, default=None)
    q.add_argument("--force", action="store_true")
    q.set_defaults(func=run_make_scene)

    q = ns.add_parser("fit", help="fit a field to DATA_DIR/transforms_train.json (or transforms.json)")
    q.add_argument("data", metavar="DATA_DIR")
    q.add_argument("--out", required=True, metavar="MODEL")
    q.add_argument("--minutes", type=pos_float, default=None, help="time budget (default 2 if no --steps)")
    q.add_argument("--steps", type=pos_int, default=None)
    q.add_argument("--field", default="fast", choices=("fast", "fast-sh", "mlp", "mlp-seed"))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--half", action="store_true", help="store weights as float16 (half the file size)")
    common(q)
    q.set_defaults(func=run_fit)

    q = ns.add_parser("render", help="render PNGs at the cameras of a transforms file")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("--transforms", required=True, metavar="FILE_OR_DIR")
    q.add_argument("--out", required=True, metavar="DIR")
    common(q)
    q.set_defaults(func=run_render)

    q = ns.add_parser("points", help="export a coloured point cloud as binary PLY")
    q.add_argument("model", metavar="MODEL")
    q.add_argument("-o", "--output", required=True, metavar="OUT.ply")
    q.add_argument("--max-points", type=pos_int, default=200_000)
    q.add_argument("--min-opacity", type=fraction, default=0.95)
    common(q)
    q.set_defaults(func=run_points)


def main(argv: list[str] | None = None) -> int:
    quiet_openmp()
    parser = argparse.ArgumentParser(prog="image2points")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
