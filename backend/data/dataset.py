"""Per-shape sample generation, the on-disk npz cache, splits by shape seed, and the in-memory loader.

Layout: ``<data>/<split>/shard_XXXXX.npz`` (plain arrays, loaded with ``allow_pickle=False``).
Splits are disjoint ranges of shape seeds, so no test shape is ever rendered into the train split.
Each shape gives ``views`` samples (input views); every sample stores its preprocessed input, the
GT depth/albedo at the fixed views and at ``novel`` random views, all in that sample's output frame,
plus its rotation ``R_in`` so the shape's surface samples (stored once per shape, centred unit-ball
model frame) map to the output frame as ``surf @ R_in.T``. The fixed-view ``layout`` the GT was
rendered for is stored per shape; data from before layouts existed is the paper's "corners". So is
the data ``recipe`` ("v4", "v5": which shape families and input renders); data from before recipes
existed is "v4".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .render import (DR_ROLL, Caster, normalizer, render_input, render_views, roll_rotation,
                     surface_samples, view_rotation)
from .shapes import RECIPES, make_shape
from ..model import geometry
from ..model.preprocess import preprocess, to_uint8

SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}
OUT_RES = 64     # fixed-view maps of the default recipe (MakeConfig.res)
LOW_RES = 64     # novel views and fixed-view colours never go finer (memory: see MakeConfig.res)
ELEV_RANGE = (-10.0, 50.0)
ELEV_RANGE_V5 = (-30.0, 70.0)


@dataclass
class MakeConfig:
    views: int = 3          # input views per shape
    novel: int = 4          # novel GT views per sample (stage 2)
    layout: str = "axis"    # fixed-view layout (geometry.LAYOUTS); must match the model's
    surf_points: int = 4096
    keep_raw: bool = False  # also store the 128x128 RGBA render (test split: grids, examples)
    families: tuple[str, ...] | None = None  # draw only these shape families (None: the full mix)
    # "v4": the shipped data, unchanged; "v5": + organic/thin/holed/CSG/creature families
    # (shapes.FAMILY_WEIGHTS_V5), domain-randomised input renders (render_input(randomise=True),
    # a camera roll of up to DR_ROLL degrees folded into R_in) and elevations ELEV_RANGE_V5
    recipe: str = "v4"
    # input crop and fixed-view depth/mask resolution: 64, or 128 (the seed's outSize). Fixed-view
    # colours (the mean of the hits in each block) and novel views stay at LOW_RES: at 128 they
    # would triple the in-memory set (~6 GB for 15,000 samples as it is), for little
    res: int = OUT_RES


def shape_seed(split: str, i: int) -> int:
    return SPLIT_SEED_BASE[split] + i


def make_samples(seed: int, cfg: MakeConfig) -> dict[str, np.ndarray]:
    """Render all samples of shape ``seed``; deterministic. Arrays have a leading views axis except
    the per-shape ``surf``/``surf_rgb``/``family``/``seed``."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown data recipe {cfg.recipe!r}; choose from {', '.join(RECIPES)}")
    v5 = cfg.recipe == "v5"
    shape = make_shape(seed, families=cfg.families, recipe=cfg.recipe)
    norm = normalizer(shape.mesh)
    caster = Caster(shape, norm)
    rng = np.random.default_rng([seed, 7])
    gen = torch.Generator().manual_seed(seed)
    fR, ft = (x.numpy().astype(np.float64) for x in geometry.fixed_views(layout=cfg.layout))
    out: dict[str, list] = {k: [] for k in ("inp", "fdepth", "frgb", "nR", "nt", "ndepth", "nrgb", "R_in", "raw")}
    for _ in range(cfg.views):
        R_in = view_rotation(rng.uniform(0, 360), rng.uniform(*(ELEV_RANGE_V5 if v5 else ELEV_RANGE)))
        if v5:  # a rolled camera: the output frame rolls with it (GT stays aligned with the image)
            R_in = roll_rotation(rng.uniform(-DR_ROLL, DR_ROLL)) @ R_in
        raw = render_input(caster, R_in, rng, randomise=v5)
        out["raw"].append(raw)
        out["inp"].append(to_uint8(preprocess(raw, size=cfg.res)))
        d, c = render_views(caster, R_in, fR, ft, cfg.res, cfg.res, geometry.ORTHO_S)
        out["fdepth"].append(d.astype(np.float16))
        out["frgb"].append(block_colours(c, d > 0, cfg.res // LOW_RES) if cfg.res > LOW_RES else c)
        nR, nt = (x.numpy().astype(np.float64) for x in geometry.random_views(cfg.novel, gen))
        d, c = render_views(caster, R_in, nR, nt, LOW_RES, LOW_RES, geometry.ORTHO_S)
        out["nR"].append(nR.astype(np.float32))
        out["nt"].append(nt.astype(np.float32))
        out["ndepth"].append(d.astype(np.float16))
        out["nrgb"].append(c)
        out["R_in"].append(R_in.astype(np.float32))
    res = {k: np.stack(v) for k, v in out.items()}
    if not cfg.keep_raw:
        del res["raw"]
    surf, surf_rgb = surface_samples(shape, norm, cfg.surf_points, seed)
    res.update(surf=surf, surf_rgb=surf_rgb, family=np.array(shape.family), seed=np.array(seed),
               layout=np.array(cfg.layout), recipe=np.array(cfg.recipe))
    return res


def block_colours(rgb: np.ndarray, hit: np.ndarray, f: int) -> np.ndarray:
    """(K,H,W,3) uint8 colours and (K,H,W) hits -> (K,H/f,W/f,3): the mean colour of each f x f
    block's hits (black where none), the colour the loss compares with the model's block mean."""
    k, h, w, _ = rgb.shape
    m = hit.reshape(k, h // f, f, w // f, f, 1).astype(np.float64)
    s = (rgb.reshape(k, h // f, f, w // f, f, 3) * m).sum((2, 4))
    n = m.sum((2, 4))
    return np.round(s / np.maximum(n, 1)).astype(np.uint8)


PER_SAMPLE = ("inp", "fdepth", "frgb", "nR", "nt", "ndepth", "nrgb", "R_in", "raw")
PER_SHAPE = ("surf", "surf_rgb", "family", "seed", "layout", "recipe")


def write_shard(path: Path, items: list[dict[str, np.ndarray]]) -> None:
    """Concatenate per-shape dicts into one npz; ``shape_index`` maps samples to shapes."""
    arrs: dict[str, np.ndarray] = {}
    for k in PER_SAMPLE:
        if k in items[0]:
            arrs[k] = np.concatenate([it[k] for it in items])
    for k in PER_SHAPE:
        if k in items[0]:
            arrs[k] = np.stack([it[k] for it in items])
    arrs["family"] = arrs["family"].astype("<U16")
    arrs["layout"] = arrs["layout"].astype("<U16")
    if "recipe" in arrs:
        arrs["recipe"] = arrs["recipe"].astype("<U8")
    arrs["shape_index"] = np.concatenate([np.full(len(it["inp"]), i, np.int32) for i, it in enumerate(items)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrs)
    tmp.replace(path)


class ShapeDataset:
    """All shards of one split in memory, served as torch batches.

    Why in memory: a few thousand samples are a few GB at most; random access then costs nothing
    next to the network step on CPU.
    """

    def __init__(self, root: str | Path, split: str, max_shapes: int | None = None,
                 keys: tuple[str, ...] | None = None):
        """``keys``: load only these per-sample arrays (plus the bookkeeping ones): the evaluation
        needs the inputs and surfaces, not the maps, which are most of a 128px set's memory."""
        files = sorted(Path(root, split).glob("shard_*.npz"))
        files = [f for f in files if not f.name.endswith(".tmp.npz")]
        if not files:
            raise FileNotFoundError(f"no shards in {Path(root, split)}; run `image2points make-data` first")
        parts: dict[str, list[np.ndarray]] = {}
        offset = 0
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                for k in z.files:
                    if keys is not None and k in PER_SAMPLE and k not in keys:
                        continue
                    v = z[k] + offset if k == "shape_index" else z[k]
                    parts.setdefault(k, []).append(v)
                if "recipe" not in z.files:  # made before recipes existed: the v4 recipe (or older)
                    parts.setdefault("recipe", []).append(np.full(len(z["seed"]), "v4", "<U8"))
                offset += len(z["seed"])
        self.a = {k: np.concatenate(v) for k, v in parts.items()}
        # data made before layouts existed hold the paper's 8 cube corners
        layouts = set(self.a.pop("layout", np.array(["corners"])).tolist())
        if len(layouts) != 1:
            raise ValueError(f"{Path(root, split)} mixes fixed-view layouts {sorted(layouts)}; "
                             "re-run `image2points make-data` into an empty folder")
        self.layout: str = layouts.pop()
        self._mirror_perm = geometry.mirror_permutation(*geometry.fixed_views(layout=self.layout))
        if max_shapes is not None:
            keep = self.a["shape_index"] < max_shapes
            for k in PER_SAMPLE + ("shape_index",):
                if k in self.a:
                    self.a[k] = self.a[k][keep]
            for k in PER_SHAPE:
                if k in self.a:
                    self.a[k] = self.a[k][:max_shapes]
        self.split = split

    def __len__(self) -> int:
        return len(self.a["inp"])

    @property
    def res(self) -> tuple[int, int]:
        """(input crop, fixed-view map) resolution the data was made at (MakeConfig.res)."""
        return int(self.a["inp"].shape[-1]), int(self.a["fdepth"].shape[-1])

    @property
    def n_shapes(self) -> int:
        return len(self.a["seed"])

    def gt_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """GT surface samples of sample ``i`` in its output frame (float32) and their albedo."""
        s = self.a["shape_index"][i]
        return self.a["surf"][s] @ self.a["R_in"][i].T, self.a["surf_rgb"][s]

    def batch(self, idx: np.ndarray | list[int], novel: int = 0,
              rng: np.random.Generator | None = None, mirror: float = 0.0, surf: int = 0
              ) -> dict[str, torch.Tensor]:
        """Tensors for samples ``idx``: inp (B,4,H,W), depth (B,V,H,W), rgb (B,V,3,H,W) in [0,1],
        mask; with ``novel`` > 0 also that many of the stored novel views, picked at random. With
        ``mirror`` > 0 that fraction of the samples is mirrored (x -> -x), exactly (``_mirror``)."""
        idx = np.asarray(idx)
        rng = rng or np.random.default_rng()
        b = self._batch(idx, novel, rng)
        if surf:  # GT surface samples in each sample's output frame (B, surf, 3)
            pick = rng.integers(0, self.a["surf"].shape[1], (len(idx), surf))
            b["surf"] = torch.from_numpy(np.stack([self.gt_points(i)[0][p] for i, p in zip(idx, pick)])
                                         .astype(np.float32))
        if mirror > 0:
            b = self._mirror(b, torch.from_numpy(rng.random(len(idx)) < mirror))
        return b

    def _mirror(self, b: dict[str, torch.Tensor], sel: torch.Tensor) -> dict[str, torch.Tensor]:
        """The selected samples as images of the mirrored object: the input and every map flipped
        left-right, fixed views permuted (geometry.mirror_permutation), novel cameras F R F, F t."""
        f = torch.tensor([-1.0, 1.0, 1.0])

        def pick(k: str, mirrored: torch.Tensor) -> torch.Tensor:
            return torch.where(sel.view(-1, *[1] * (b[k].dim() - 1)), mirrored, b[k])

        out = dict(b, inp=pick("inp", b["inp"].flip(-1)))
        for k in ("depth", "mask", "rgb", "rgb_mask"):
            out[k] = pick(k, b[k][:, self._mirror_perm].flip(-1))
        if "nR" in b:
            for k in ("ndepth", "nmask", "nrgb"):
                out[k] = pick(k, b[k].flip(-1))
            out["nR"] = pick("nR", f.view(3, 1) * b["nR"] * f)
            out["nt"] = pick("nt", b["nt"] * f)
        if "surf" in b:
            out["surf"] = pick("surf", b["surf"] * f)
        return out

    def _batch(self, idx: np.ndarray, novel: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        a = self.a
        b = {
            "inp": torch.from_numpy(a["inp"][idx].astype(np.float32) / 255.0),
            "depth": torch.from_numpy(a["fdepth"][idx].astype(np.float32)),
            "rgb": torch.from_numpy(a["frgb"][idx]).permute(0, 1, 4, 2, 3).float() / 255.0,
        }
        b["mask"] = (b["depth"] > 0).float()
        f = b["depth"].shape[-1] // b["rgb"].shape[-1]  # colours are stored at LOW_RES at most
        b["rgb_mask"] = (torch.nn.functional.max_pool2d(b["mask"], f) if f > 1 else b["mask"])
        if novel:
            kk = a["nR"].shape[1]
            pick = np.stack([rng.choice(kk, size=novel, replace=False) for _ in idx])
            rows = idx[:, None]
            b["nR"] = torch.from_numpy(a["nR"][rows, pick])
            b["nt"] = torch.from_numpy(a["nt"][rows, pick])
            b["ndepth"] = torch.from_numpy(a["ndepth"][rows, pick].astype(np.float32))
            b["nrgb"] = torch.from_numpy(a["nrgb"][rows, pick]).permute(0, 1, 4, 2, 3).float() / 255.0
            b["nmask"] = (b["ndepth"] > 0).float()
        return b
