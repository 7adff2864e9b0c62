"""``image2points pipeline``: make-data -> train -> eval for the default model, in one command.

    image2points pipeline                      # the shipped recipe: ~5.5 + 51 + 1.5 minutes on 2 cores
    image2points pipeline --smoke              # the same steps on a tiny set (CI, ~2 minutes)
    image2points pipeline --install            # then copy model, card and report to backend/weights/
    image2points pipeline --minutes 150 --leg-minutes 55   # a longer run in legs: run the same
                                               # command again until it reports the run finished

Each step's wall time goes to ``<out>/pipeline.json`` beside the eval verdict, so the "under an
hour on a 2-core CPU" claim is a file anyone can regenerate, not a sentence. make-data skips
shards that already exist: its time is only the full cost on an empty ``--data`` folder. With
``--leg-minutes`` each call trains one leg (resuming the run in ``--out``), adds its times to those
of the earlier legs in pipeline.json, and evaluates only once the training budget is spent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .cli_args import err, pos_float, pos_int, why, writable_dir


def run_pipeline(data: str, out: str, minutes: float | None, smoke: bool, fresh: bool,
                 workers: int, gen: str = "", leg_minutes: float | None = None, recipe: str = "v4",
                 res: int = 64) -> dict[str, Any]:
    from . import evaluate, train
    from .data import make

    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    before = outp / "pipeline.json"
    earlier = (json.loads(before.read_text()).get("seconds", {})
               if before.exists() and not fresh and (outp / "state.pt").exists() else {})

    t0 = time.time()
    existing = len(list(Path(data).glob("*/shard_*.npz")))
    make.make_all(Path(data), dict(make.SMOKE if smoke else make.DEFAULT), workers=workers,
                  recipe=recipe, res=res)
    times["make_data"] = time.time() - t0

    t0 = time.time()
    cfg = train.make_config(smoke, minutes, data=data, out=str(outp), gen=gen, leg_minutes=leg_minutes)
    result = train.train(cfg, resume=not fresh)
    times["train"] = time.time() - t0

    verdict = None
    if result["finished"]:
        t0 = time.time()
        report = evaluate.run_eval(str(outp / "model.pt"), data, str(outp), third_party=not smoke)
        times["eval"] = time.time() - t0
        print(evaluate.format_table(report))
        verdict = report["verdict"]
    else:
        print(f"leg {len(result['legs'])} done at step {result['steps']} ({result['minutes']} of "
              f"{cfg.minutes:g} min): run the same command again to go on")
    for k, v in earlier.items():  # the legs before this one
        times[k] = times.get(k, 0.0) + v
    summary = {"data": data, "smoke": smoke, "shards_present_before": existing,
               "seconds": {k: round(v, 1) for k, v in times.items()},
               "total_minutes": round(sum(times.values()) / 60, 2),
               "train_result": result, "verdict": verdict}
    (outp / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def install_all(out: str) -> Path:
    """Model + card (train.install), then the eval report, grid and loss curve beside them."""
    from .train import install

    dst = install(out)
    for name in ("eval_report.json", "eval_grid.png", "loss.png"):
        src = Path(out) / name
        if src.exists():
            shutil.copyfile(src, dst.parent / name)
    return dst


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="make-data -> train -> eval (the default model's recipe)")
    p.add_argument("--data", default="data")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--minutes", type=pos_float, default=None, help="training budget (default: train's)")
    p.add_argument("--workers", type=pos_int, default=2, help="make-data processes")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1-minute training, no third-party set")
    p.add_argument("--fresh", action="store_true", help="ignore a saved training state in --out")
    p.add_argument("--recipe", default="v4", choices=("v4", "v5"), help="data recipe (make-data --recipe)")
    p.add_argument("--res", type=int, default=64, choices=(64, 128),
                   help="input and fixed-view resolution (make-data --res; the model follows its data)")
    p.add_argument("--leg-minutes", type=pos_float, default=None,
                   help="train at most this long per call; call again to go on (eval after the last leg)")
    p.add_argument("--gen", default="", metavar="K=V,..",
                   help="generator overrides, as for train (e.g. depth_quantiles=3)")
    p.add_argument("--install", action="store_true", help="copy the result to backend/weights/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .train import GeneratorConfig, generator_config

    try:  # a --gen typo is an error now, not after minutes of make-data
        generator_config(GeneratorConfig.layout, args.gen)
    except ValueError as exc:
        return err(str(exc), "image2points pipeline")
    reason = writable_dir(args.data, "--data") or writable_dir(args.out, "--out")
    if reason:
        return err(reason, "image2points pipeline")
    try:
        s = run_pipeline(args.data, args.out, args.minutes, args.smoke, args.fresh, args.workers, args.gen,
                         args.leg_minutes, args.recipe, args.res)
    except (FileNotFoundError, ValueError) as exc:
        return err(str(exc), "image2points pipeline")
    except OSError as exc:
        return err(why(exc), "image2points pipeline")
    print(json.dumps({k: s[k] for k in ("seconds", "total_minutes", "verdict")}, indent=2))
    if args.install and s["verdict"] is not None:
        try:
            print(f"installed {install_all(args.out)}")
        except OSError as exc:
            return err(f"trained and evaluated, but not installed: {why(exc)}", "image2points pipeline")
    return 0
