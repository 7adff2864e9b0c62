"""``image2points make-data``: render the procedural train/val/test splits into ``data/`` (npz shards).

Deterministic: shape i of a split is ``make_shape(SPLIT_SEED_BASE[split] + i)``; re-running skips
shards that already exist, so an interrupted run resumes (into a folder of the same ``--recipe``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..cli_args import err, nonneg_int, pos_int, why, writable_dir
from .dataset import MakeConfig, make_samples, shape_seed, write_shard
from .shapes import FAMILIES, RECIPES
from ..model import geometry

SHARD = 200  # shapes per shard

# default sizes (shapes per split) for the shipped model; --smoke makes a tiny set for CI
DEFAULT = {"train": 5000, "val": 100, "test": 200}
SMOKE = {"train": 48, "val": 8, "test": 12}


def _work(job: tuple[int, MakeConfig]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seed, cfg = job
    return make_samples(seed, cfg)


def make_split(root: Path, split: str, n_shapes: int, cfg: MakeConfig, workers: int) -> int:
    """Render one split; returns the number of shapes newly rendered."""
    done = 0
    jobs = []
    for s0 in range(0, n_shapes, SHARD):
        path = root / split / f"shard_{s0 // SHARD:05d}.npz"
        n = min(SHARD, n_shapes - s0)
        if not path.exists():
            jobs.append((path, [(shape_seed(split, s0 + i), cfg) for i in range(n)]))
        else:  # resuming: the shards there must be of the same recipe
            with np.load(path, allow_pickle=False) as z:
                have = set(z["recipe"].tolist()) if "recipe" in z.files else {"v4"}
                res = int(z["fdepth"].shape[-1])
            if have != {cfg.recipe} or res != cfg.res:
                raise ValueError(f"{path} holds recipe {'/'.join(sorted(have))} data at {res}px, not "
                                 f"{cfg.recipe} at {cfg.res}px; make it into an empty folder")
    total = sum(len(j[1]) for j in jobs)
    if not total:
        return 0
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) if workers > 1 else _Serial() as pool, \
            tqdm(total=total, desc=f"make-data {split}", unit="shape") as bar:
        for path, args in jobs:
            items = []
            for it in pool.imap(_work, args, chunksize=4):
                items.append(it)
                bar.update(1)
            write_shard(path, items)
            done += len(items)
    return done


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def imap(self, f, xs, chunksize=1):
        return map(f, xs)


def register(sub) -> None:
    p = sub.add_parser("make-data", help="render the procedural training/eval data set into data/")
    p.add_argument("--data", default="data", help="output folder (default: data/)")
    p.add_argument("--smoke", action="store_true", help=f"tiny set for CI ({SMOKE} shapes)")
    p.add_argument("--train", type=nonneg_int, default=None, help=f"train shapes (default {DEFAULT['train']})")
    p.add_argument("--val", type=nonneg_int, default=None)
    p.add_argument("--test", type=nonneg_int, default=None)
    p.add_argument("--views", type=pos_int, default=MakeConfig.views, help="input views per shape")
    p.add_argument("--novel", type=pos_int, default=MakeConfig.novel, help="novel GT views per sample")
    p.add_argument("--layout", default=MakeConfig.layout, choices=sorted(geometry.LAYOUTS),
                   help="fixed views rendered as ground truth (the model follows the data)")
    p.add_argument("--families", type=_families, default=None, metavar="F1,F2,...",
                   help="draw only these shape families, in every split (default: all, "
                        "weighted as in shapes.FAMILY_WEIGHTS)")
    p.add_argument("--recipe", default=MakeConfig.recipe, choices=RECIPES,
                   help="data recipe: v4 = the shipped data; v5 = + organic, tube, holed, CSG and "
                        "creature families, domain-randomised input renders (fov, roll, light, "
                        "truncation) and elevations -30..70 (default: v4)")
    p.add_argument("--res", type=int, default=MakeConfig.res, choices=(64, 128),
                   help="input crop and fixed-view depth resolution (128: the seed's outSize; "
                        "colours and novel views stay at 64)")
    p.add_argument("--workers", type=pos_int, default=min(2, os.cpu_count() or 1))
    p.set_defaults(func=run)


def _families(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in FAMILIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown families {bad or text!r}; choose from {', '.join(FAMILIES)}")
    return names


def make_all(root: Path, sizes: dict[str, int], views: int = MakeConfig.views,
             novel: int = MakeConfig.novel, workers: int = 2, layout: str = MakeConfig.layout,
             families: tuple[str, ...] | None = None, recipe: str = MakeConfig.recipe,
             res: int = MakeConfig.res) -> None:
    """Every split (shapes per split in ``sizes``); the test split keeps its raw renders."""
    t0 = time.time()
    for split, n in sizes.items():
        cfg = MakeConfig(views=views, novel=novel, layout=layout, keep_raw=(split == "test"),
                         families=families, recipe=recipe, res=res)
        make_split(root, split, n, cfg, workers)
    print(f"make-data: {sizes} in {root} ({time.time() - t0:.1f} s)")


def run(args) -> int:
    sizes = dict(SMOKE if args.smoke else DEFAULT)
    for k in sizes:
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    if not any(sizes.values()):
        return err("nothing to make: --train, --val and --test are all 0", "image2points make-data")
    reason = writable_dir(args.data, "--data")
    if reason:
        return err(reason, "image2points make-data")
    try:
        make_all(Path(args.data), sizes, args.views, args.novel, args.workers, args.layout, args.families,
                 args.recipe, args.res)
    except OSError as exc:  # the disk filled up, the folder went away
        return err(why(exc), "image2points make-data")
    except ValueError as exc:  # resuming into a folder of another recipe
        return err(str(exc), "image2points make-data")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m image2points.backend.data.make")
    sp = ap.add_subparsers()
    register(sp)
    import sys

    a = ap.parse_args(["make-data", *sys.argv[1:]])
    raise SystemExit(a.func(a))
