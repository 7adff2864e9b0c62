"""Coloured point cloud -> watertight coloured triangle mesh (numpy + scipy + PyMCubes, no bpy).

Why this route (bench/bench_mesh.py measures it beside Blender's Points to Volume -> Volume to
Mesh): the points are splatted into an occupancy grid (voxel about the point spacing), which an
optional morphological closing seals ("fill holes") and ``binary_fill_holes`` makes solid;
``tidy_solid`` thickens its thin sheets and drops crumbs; marching cubes on that solid gives ONE
closed surface through the points, without see-through pinholes. A volume grown around surface
points (what Points to Volume does) has no inside, so its mesh is a double wall a point radius off
each side of the surface.

Decimation is a coarser grid (faces scale with 1/voxel^2), not edge collapse, so the result stays
watertight by construction; smoothing is Taubin's (volume-keeping) filter; colours are the
nearest points' colours. Frame-agnostic: ``up`` only matters for ``close_bottom``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_GRID = 384  # voxels along the longest side: 384^3 bytes = 57 MB, a few seconds at most
MIN_POINTS = 4
AUTO_FILL_MAX = 3  # auto fill_holes tries closing radii 0..this
AUTO_FILL_GAIN = 1.1  # ...and takes the first whose fill grows the shell by this factor (an inside)
CRUMB_VOXELS = 64  # solid parts smaller than this and than CRUMB_SHARE of the largest are dropped
CRUMB_SHARE = 0.002
SHEET_NEIGHBOURS = 6  # a thin voxel with at least this many of its 26 neighbours is in a sheet (val)
SPACING_FACTOR = 1.0  # voxel vs the point spacing: finer (0.85) scores 0.0852 vs 0.0870 but snaps into visible creases


@dataclass
class MeshParams:
    voxel: float = 0.0  # voxel edge in the cloud's units; 0 = auto from extent and density
    detail: int = 128  # voxels along the longest side when voxel is auto (before the density cap)
    target_faces: int = 0  # upper bound on faces (0 = no limit): coarsens the grid to meet it
    smooth: int = 12  # Taubin iterations on the mesh
    # closing radius in voxels (bridges gaps of ~2x this; the surface is snapped back onto the
    # points after). -1 = auto: the smallest radius (<= AUTO_FILL_MAX) that encloses an inside, so
    # the mesh is a solid; 0 = off: a leaky cloud then gives a thin closed shell with see-through
    # gaps (bench/bench_mesh.py, lifted clouds: Chamfer at the cloud's own, auto about 4% above it)
    fill_holes: int = -1
    close_bottom: bool = False  # cap an open bottom (the lowest slices' enclosed area) before filling
    up: int = 1  # the vertical axis for close_bottom (1 = y in the viewer frame, 2 = z in Blender)


@dataclass
class Mesh:
    vertices: np.ndarray  # (V,3) float32
    faces: np.ndarray  # (F,3) int32, counter-clockwise seen from outside
    colors: np.ndarray  # (V,3) uint8 sRGB
    info: dict[str, Any] = field(default_factory=dict)


def check_params(p: MeshParams) -> None:
    """ValueError naming the bad control (the op turns it into BAD_INPUT)."""
    if not (np.isfinite(p.voxel) and p.voxel >= 0):
        raise ValueError("voxel must be >= 0 (0 = automatic)")
    if not 8 <= p.detail <= MAX_GRID:
        raise ValueError(f"detail must be within 8..{MAX_GRID} voxels")
    if p.target_faces < 0 or p.smooth < 0 or p.fill_holes < -1:
        raise ValueError("target_faces and smooth must be >= 0, fill_holes >= -1 (auto)")
    if p.smooth > 100 or p.fill_holes > 16:
        raise ValueError("smooth must be <= 100 and fill_holes <= 16")
    if p.up not in (0, 1, 2):
        raise ValueError("up must be 0, 1 or 2")


def point_spacing(xyz: np.ndarray, sample: int = 4000, seed: int = 0, tree: Any = None) -> float:
    """Typical distance between surface samples, ~sqrt(area / N): the median distance to the 6th
    nearest neighbour / 1.4, which reads the same for grid-like clouds (the model's fixed-view
    pixels) and random ones (where the nearest neighbour alone is half as far). From a subsample,
    so 1M points cost the same as 4k."""
    from scipy.spatial import cKDTree

    if len(xyz) > sample:
        probe = xyz[np.random.default_rng(seed).choice(len(xyz), sample, replace=False)]
    else:
        probe = xyz
    k = min(7, len(xyz))
    d = (tree or cKDTree(xyz)).query(probe, k=k, workers=-1)[0][:, k - 1]
    return float(np.median(d)) / 1.4


def auto_voxel(xyz: np.ndarray, p: MeshParams, tree: Any = None) -> float:
    """``detail`` voxels across, but never finer than the points are dense (gaps would open)."""
    extent = float((xyz.max(0) - xyz.min(0)).max())
    return max(extent / p.detail, SPACING_FACTOR * point_spacing(xyz, tree=tree), extent / MAX_GRID, 1e-9)


def solid_grid(xyz: np.ndarray, voxel: float, p: MeshParams) -> tuple[np.ndarray, np.ndarray, int]:
    """Occupancy (bool grid) of the closed, filled object, the world position of voxel 0 and the
    closing radius used."""
    from scipy import ndimage

    radii = [p.fill_holes] if p.fill_holes >= 0 else list(range(AUTO_FILL_MAX + 1))
    pad = max(radii) + 3
    lo = xyz.min(0) - pad * voxel
    idx = np.floor((xyz - lo) / voxel).astype(np.int64)
    shape = tuple(int(s) for s in idx.max(0) + pad + 2)
    if max(shape) > MAX_GRID + 2 * pad + 2:
        raise ValueError(f"grid {shape} too large: raise the voxel size")
    shell = np.zeros(shape, bool)
    shell[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    # the closing's element is the full 3x3x3 cube: with the 6-neighbour one, a voxel missing from
    # a one-voxel sheet (random samples, the lifted picture) is eroded again and stays a pit, which
    # renders as dark speckle (tools/mesh_picture.py); the cube closes it
    ball = ndimage.generate_binary_structure(3, 3)
    first: np.ndarray | None = None
    first_r = 0
    for r in radii:
        occ = ndimage.binary_dilation(shell, ball, iterations=r) if r else shell
        if p.close_bottom:  # after the dilation, which seals a leaky rim first
            occ = close_bottom(occ, p.up)
        solid = ndimage.binary_fill_holes(occ)
        # auto: the smallest closing whose shell encloses an inside (a sealed surface fills up;
        # a leaky one stays a shell: sparse random samples need r = 1 or 2, a thin plate none).
        # Judged before the erosion: what the closing bridges is no inside
        inside = solid.sum() > AUTO_FILL_GAIN * occ.sum()
        if r:  # erode back what the dilation grew; the border stays empty (pad)
            solid = ndimage.binary_erosion(solid, ball, iterations=r, border_value=0) | shell
        if len(radii) == 1 or inside:
            return solid, lo, r
        if r <= 1:
            first, first_r = solid, r
    assert first is not None
    # nothing encloses an inside (a sheet, a plate, a chair's open frame): a thin closed shell,
    # with the one-voxel closing so its pits are shut (snapped back onto the points after)
    return first, lo, first_r


def tidy_solid(occ: np.ndarray) -> np.ndarray:
    """Two repairs so that marching cubes gives a surface one can use as an asset.

    - Sheets under three voxels thick grow one voxel on each side (the snap after a closing pulls
      the surface back onto the points). Marching cubes wraps a one- or two-voxel sheet
      in a surface with a tunnel wherever the sheet steps diagonally; rendered, these are
      see-through pinholes (the mug's rim in tools/mesh_picture.py). On 40 val clouds: genus 107
      -> 39, see-through pixels 1.6% -> 0.9% of the silhouette, Chamfer +0.8%.
    - Crumbs, the lone voxels of stray points (parts under CRUMB_VOXELS and under CRUMB_SHARE of
      the largest), go: 44 -> 5 separate surfaces per mesh on the same clouds.
    """
    from scipy import ndimage

    from ..islands import keep_large

    cube = ndimage.generate_binary_structure(3, 3)
    thin = occ & ~ndimage.binary_opening(occ, cube)
    # sheets only: a stray point's voxel has few neighbours, and grown it would weigh 9x in the
    # surface (val Chamfer +1.3% growing all thin voxels, +0.8% growing these)
    thin &= ndimage.convolve(occ.view(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant") > SHEET_NEIGHBOURS
    return keep_large(occ | ndimage.binary_dilation(thin, cube), CRUMB_SHARE, CRUMB_VOXELS, cube)


def close_bottom(occ: np.ndarray, axis: int, layers: int = 2) -> np.ndarray:
    """Cap an open bottom: the lowest ``layers`` slices along ``axis``, seen from above, with
    their enclosed holes filled (a wall ring becomes a disc; a chair's four leg ends stay four)."""
    from scipy import ndimage

    occ = np.moveaxis(occ, axis, 0).copy()
    filled = np.flatnonzero(occ.any(axis=(1, 2)))
    if len(filled):
        z0 = int(filled[0])
        occ[z0] |= ndimage.binary_fill_holes(occ[z0:z0 + layers].any(0))
    return np.moveaxis(occ, 0, axis)


def marching_cubes(occ: np.ndarray, lo: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (world) and outward-facing triangles of the solid's boundary. On the binary grid
    (no blur: a blur erases one-voxel-thin parts such as chair legs, measured -12% completeness);
    the staircase is Taubin's job afterwards."""
    import mcubes

    v, f = mcubes.marching_cubes(occ.astype(np.float32), 0.5)
    # voxel (i,j,k) holds the points in [lo + i*voxel, lo + (i+1)*voxel): its centre is +0.5
    verts = (lo + (v + 0.5) * voxel).astype(np.float32)
    faces = np.ascontiguousarray(f, dtype=np.int32)
    if len(faces) and signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = (v[f[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def taubin(v: np.ndarray, f: np.ndarray, iterations: int, lam: float = 0.5, mu: float = -0.53
           ) -> np.ndarray:
    """Taubin lambda/mu smoothing (umbrella operator as one sparse matrix): removes the voxel
    staircase without shrinking the object as plain Laplacian smoothing does."""
    if iterations <= 0 or len(f) == 0:
        return v
    from scipy import sparse

    n = len(v)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sparse.coo_matrix((np.ones(len(e), np.float32), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    adj.data[:] = 1.0  # duplicate entries (each edge is in two faces) summed to 2; weight 1 each
    deg = np.asarray(adj.sum(1)).ravel()
    w = sparse.diags(1.0 / np.maximum(deg, 1.0)) @ adj
    out = v.astype(np.float64)
    for _ in range(iterations):
        out = out + lam * (w @ out - out)
        out = out + mu * (w @ out - out)
    return out.astype(np.float32)


def snap(verts: np.ndarray, xyz: np.ndarray, k: int = 4, tree: Any = None) -> np.ndarray:
    """Each vertex onto the mean of its k nearest points (topology unchanged: still watertight);
    measured on test shapes with a closing: Chamfer 0.0911 -> 0.0885."""
    from scipy.spatial import cKDTree

    _, i = (tree or cKDTree(xyz)).query(verts, k=min(k, len(xyz)), workers=-1)
    return xyz[i].mean(1).astype(np.float32) if i.ndim == 2 else xyz[i]


def nearest_colors(xyz: np.ndarray, rgb: np.ndarray, query: np.ndarray, tree: Any = None) -> np.ndarray:
    from scipy.spatial import cKDTree

    _, i = (tree or cKDTree(xyz)).query(query, k=1, workers=-1)
    return rgb[i]


def edge_counts(faces: np.ndarray) -> np.ndarray:
    """How many faces share each undirected edge (a closed 2-manifold: all exactly 2)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    key = e[:, 0].astype(np.int64) * (int(faces.max(initial=0)) + 1) + e[:, 1]
    return np.unique(key, return_counts=True)[1]


def is_watertight(faces: np.ndarray) -> bool:
    return len(faces) > 0 and bool((edge_counts(faces) == 2).all())


def mesh_points(xyz: np.ndarray, rgb: np.ndarray | None = None, params: MeshParams | None = None
                ) -> Mesh:
    """The whole pipeline; ValueError for input it cannot mesh (too few or non-finite points)."""
    p = params or MeshParams()
    check_params(p)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32).reshape(-1, 3)
    if len(xyz) < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} points to make a mesh, got {len(xyz)}")
    if not np.isfinite(xyz).all():
        raise ValueError("points have non-finite coordinates")
    if rgb is None:
        rgb = np.full((len(xyz), 3), 200, np.uint8)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(rgb) != len(xyz):
        raise ValueError(f"{len(xyz)} points but {len(rgb)} colours")
    from scipy.spatial import cKDTree

    tree = cKDTree(xyz)  # one tree for the spacing, the snap and the colours
    extent = float((xyz.max(0) - xyz.min(0)).max())
    voxel = p.voxel if p.voxel > 0 else auto_voxel(xyz, p, tree)
    voxel = max(voxel, extent / MAX_GRID, 1e-9)
    for _ in range(4):  # coarsen until under target_faces (faces ~ 1/voxel^2)
        occ, lo, radius = solid_grid(xyz, voxel, p)
        if radius:  # no closing (fill_holes 0) asks for the leaky shell as it is, pieces and all
            occ = tidy_solid(occ)
        verts, faces = marching_cubes(occ, lo, voxel)
        if not p.target_faces or len(faces) <= p.target_faces:
            break
        voxel *= 1.05 * float(np.sqrt(len(faces) / p.target_faces))
    if radius and len(verts):  # a closing grew the surface off the points: pull it back onto them
        verts = snap(verts, xyz, tree=tree)
    verts = taubin(verts, faces, p.smooth)
    colors = nearest_colors(xyz, rgb, verts, tree) if len(verts) else np.zeros((0, 3), np.uint8)
    info = {"voxel": voxel, "grid": list(occ.shape), "fill_radius": radius, "vertices": len(verts),
            "faces": len(faces)}
    return Mesh(verts, faces, colors, info)


def surface_samples(m: Mesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted random points on the mesh and their colours (barycentric blend)."""
    rng = np.random.default_rng(seed)
    a, b, c = (m.vertices[m.faces[:, i]].astype(np.float64) for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    tri = rng.choice(len(area), n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    pts = w[:, :1] * a[tri] + w[:, 1:2] * b[tri] + w[:, 2:] * c[tri]
    col = sum(w[:, i:i + 1] * m.colors[m.faces[tri, i]].astype(np.float64) for i in range(3))
    return pts.astype(np.float32), np.asarray(col, np.float64)


def write_mesh(path: str, m: Mesh) -> None:
    """.ply / .obj / .glb by extension, via trimesh (vertex colours kept in all three)."""
    import trimesh

    ext = path.lower().rsplit(".", 1)[-1]
    if ext not in ("ply", "obj", "glb"):
        raise ValueError(f"mesh format .{ext} not supported: use .ply, .obj or .glb")
    rgba = np.concatenate([m.colors, np.full((len(m.colors), 1), 255, np.uint8)], 1)
    tm = trimesh.Trimesh(m.vertices, m.faces, vertex_colors=rgba, process=False)
    tm.export(path)
