"""The object's mirror plane, found in the reconstructed cloud and checked against the picture.

Why: most made things (and many grown ones) are mirror-symmetric, and the side the camera sees is
known exactly from the picture. Reflected across the right plane, the lifted visible surface is a
second, sharper estimate of the unseen side than the fixed-view maps alone. On 400 validation views
it raises F@2% by about 0.003 (+0.0031 and +0.0027 on the two halves, paired bootstrap CI above
zero), where random planes lower it by 0.004: the gain is the plane's, not extra spread.

The plane: objects stand upright and photos are taken without roll, so its normal is searched among
the horizontal directions of the world (perpendicular to the world's up, which the camera sees tilted
by an unknown elevation, -15..55 degrees), then refined freely. A candidate (n, d) is scored by

- ``asym``: how far the cloud's reflection lands from the cloud (a truncated distance field on a
  coarse grid, in voxels / ``CAP``), and
- ``violation``: the share of reflected visible points the picture rules out (outside the
  silhouette, or in front of the surface the camera sees),

``cost = asym + violation``. Pure numpy/scipy: no torch, no bpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

GRID = 32            # distance-field grid over the cloud's bounding cube
OCCUPANCY_POINTS = 20_000  # about this many of the cloud's points mark the grid
CAP = 3.0            # voxels: a reflected point this far or farther from the cloud costs 1
SAMPLE = 100         # cloud points and visible points scored per candidate plane (val: 100 as good as 200)
ELEVATIONS = np.arange(-15.0, 56.0, 10.0)  # degrees: the camera's elevation over the object
TURNS = np.arange(0.0, 180.0, 5.0)         # degrees: the normal's direction in the horizontal plane
STEPS = (0.05, 0.02)  # refinement: normal and offset nudges, coarse to fine
SHORTLIST = 64       # coarse planes the picture scores (of the 288 the cloud scores)
SEEDS = 2            # the best coarse planes refined, at least 20 degrees apart
SEED_COS = float(np.cos(np.radians(20.0)))
MAX_COST = 0.4       # a plane costlier than this is no symmetry: no completion (val: beyond it, a loss)


@dataclass
class Plane:
    n: np.ndarray  # (3,) unit normal
    d: float       # the plane is {p : p . n = d}
    asym: float
    violation: float

    @property
    def cost(self) -> float:
        return self.asym + self.violation


def reflect(p: np.ndarray, n: np.ndarray, d: float | np.ndarray) -> np.ndarray:
    """``p`` (..., 3) mirrored across {x . n = d}; with ``n`` (K, 3) and ``d`` (K,) and ``p`` (S, 3),
    all K planes at once: (S, K, 3)."""
    if n.ndim == 1:
        return p - 2 * (p @ n - d)[..., None] * n
    return p[:, None, :] - 2 * (p @ n.T - d)[:, :, None] * n[None]


@lru_cache(maxsize=1)
def upright_normals() -> np.ndarray:
    """Normals of vertical planes (containing the world's up) for each elevation in the camera's
    frame: up = (0, cos e, sin e), the normal turns in the plane spanned by x and up's normal."""
    out = []
    for e in np.radians(ELEVATIONS):
        a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, -np.sin(e), np.cos(e)])
        for th in np.radians(TURNS):
            out.append(np.cos(th) * a + np.sin(th) * b)
    return np.array(out)


def find_plane(cloud: np.ndarray, visible: np.ndarray,
               picture_rules_out: Callable[[np.ndarray], np.ndarray],
               rng: np.random.Generator) -> Plane:
    """The cheapest mirror plane of ``cloud`` (N, 3); ``visible`` (M, 3) are the points the picture
    shows; ``picture_rules_out`` maps reflected points (..., 3) to a bool (...) array."""
    grid_pts = cloud[:: max(1, len(cloud) // OCCUPANCY_POINTS)]  # a strided view: fast, enough
    # column by column: numpy's reduction down the rows of a strided (N, 3) view is 10x slower
    lo = np.array([grid_pts[:, i].min() for i in range(3)]) - 0.05
    span = float((np.array([grid_pts[:, i].max() for i in range(3)]) - lo).max()) + 0.1
    idx = np.clip(((grid_pts - lo) / span * GRID).astype(np.int64), 0, GRID - 1)
    occ = np.zeros((GRID,) * 3, bool)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    # L1 (taxicab) voxel distance: 10x cheaper than the Euclidean transform (with the shortlist, two
    # seeds and 100 points, val F@2% +0.0031 against +0.0035 for a search 5x as slow)
    field = (np.minimum(ndimage.distance_transform_cdt(~occ, metric="taxicab"), CAP) / CAP
             ).astype(np.float32)
    # one voxel of border at the full cost: a reflection that leaves the grid looks it up there
    field = np.pad(field, 1, constant_values=1.0).ravel()
    strides = np.array([(GRID + 2) ** 2, GRID + 2, 1])
    q = cloud[rng.choice(len(cloud), min(SAMPLE, len(cloud)), replace=False)]
    v = visible[rng.choice(len(visible), min(SAMPLE, len(visible)), replace=False)]

    def asymmetry(ns: np.ndarray, ds: np.ndarray) -> np.ndarray:
        ii = np.clip(((reflect(q, ns, ds) - lo) / span * GRID).astype(np.int64), -1, GRID) + 1
        return field[ii @ strides].mean(0)

    def costs(ns: np.ndarray, ds: np.ndarray, asym: np.ndarray | None = None) -> np.ndarray:
        asym = asymmetry(ns, ds) if asym is None else asym
        return np.stack([asym, picture_rules_out(reflect(v, ns, ds)).mean(0)], 1)

    ns = upright_normals()
    # through the centroid of the occupied voxels, not of the points: the lifted side is denser
    centre = (np.argwhere(occ).mean(0) + 0.5) / GRID * span + lo
    ds = centre @ ns.T
    # the picture's test (the dearer half) only for the planes the cloud itself finds most symmetric
    asym = asymmetry(ns, ds)
    short = np.argsort(asym)[:SHORTLIST]
    ns, ds = ns[short], ds[short]
    c = costs(ns, ds, asym[short])
    seeds: list[int] = []
    for k in np.argsort(c.sum(1)):  # distinct seeds: a flat part tilted by the grid's step costs
        if all(abs(ns[k] @ ns[j]) < SEED_COS for j in seeds):  # much before it is refined
            seeds.append(int(k))
            if len(seeds) == SEEDS:
                break
    # all seeds refined together (one cost call per round): each moves to its cheapest nudge
    n, d, best = ns[seeds], ds[seeds], c[seeds]
    nudges = np.concatenate([np.eye(3), -np.eye(3), np.zeros((1, 3))])
    shifts = np.array([-1.0, 0.0, 1.0])
    for step in STEPS:
        for _ in range(2):
            cn = n[:, None, :] + nudges[None] * step                     # (S, 7, 3)
            cn = np.repeat(cn / np.linalg.norm(cn, axis=-1, keepdims=True), 3, 1)  # (S, 21, 3)
            cd = d[:, None] + np.tile(shifts * step, len(nudges))[None]  # (S, 21)
            cc = costs(cn.reshape(-1, 3), cd.ravel()).reshape(len(n), -1, 2)
            j = cc.sum(-1).argmin(1)
            better = cc[np.arange(len(n)), j].sum(1) < best.sum(1) - 1e-6
            if not better.any():
                break
            sel = np.arange(len(n))[better]
            n[sel], d[sel], best[sel] = cn[sel, j[sel]], cd[sel, j[sel]], cc[sel, j[sel]]
    k = int(best.sum(1).argmin())
    return Plane(n[k], float(d[k]), float(best[k, 0]), float(best[k, 1]))
