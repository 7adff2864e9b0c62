"""Points -> mesh: the project's mesher (backend/model/meshing.py) beside Blender's Geometry Nodes
(Points to Volume -> Volume to Mesh), on the same clouds in one run, next to the model forward.

Time: a 100k-point and a 1M-point cloud (surface samples of the chair example's mesh, with
colours). Quality, on test-split shapes (seeds from the test range) and the third-party objects
(Blender-made, needs the bpy wheel): Chamfer of 4096 mesh surface samples vs GT beside the cloud's
own (same unit-ball frame, evaluate.metrics), watertight share (every edge in exactly two faces),
and colour error: mean |mesh surface colour - nearest cloud point's colour| in 0..255.

Screened Poisson is measured when pymeshlab is installed (``pip install pymeshlab``, a 100+ MB wheel
for one function, so not a dependency; Open3D's is 400 MB): Kazhdan & Hoppe's screened Poisson at
octree depth 8, fed with PCA normals (16 neighbours) turned outward by the mesher's own solid, since
a plain cloud has no oriented normals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from image2points.backend.evaluate import N_EVAL, metrics, subsample, subsample_index
from image2points.backend.model import meshing
from image2points.backend.threads import torch_threads
from image2points.bench.timing import measure, table

ROOT = Path(__file__).resolve().parents[1]


# -- the Geometry Nodes candidate (what a native "Make Mesh" in Blender would run) --------------

def gn_mesh(xyz: np.ndarray, voxel: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Points to Volume -> Volume to Mesh in the bpy wheel; (vertices, triangles)."""
    import bpy

    me = bpy.data.meshes.new("bench_pts")
    me.vertices.add(len(xyz))
    me.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(xyz, np.float32).ravel())
    ob = bpy.data.objects.new("bench_pts", me)
    bpy.context.scene.collection.objects.link(ob)
    ng = bpy.data.node_groups.get("bench_gn") or _gn_group()
    p2v = ng.nodes["p2v"]
    p2v.inputs["Voxel Size"].default_value = voxel
    p2v.inputs["Radius"].default_value = radius
    mod = ob.modifiers.new("gn", "NODES")
    mod.node_group = ng
    ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    out = bpy.data.meshes.new_from_object(ev)
    out.calc_loop_triangles()
    v = np.empty(len(out.vertices) * 3, np.float32)
    out.vertices.foreach_get("co", v)
    f = np.empty(len(out.loop_triangles) * 3, np.int32)
    out.loop_triangles.foreach_get("vertices", f)
    bpy.data.objects.remove(ob)
    bpy.data.meshes.remove(me)
    bpy.data.meshes.remove(out)
    return v.reshape(-1, 3), f.reshape(-1, 3)


def _gn_group() -> Any:
    import bpy

    ng = bpy.data.node_groups.new("bench_gn", "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n, link = ng.nodes, ng.links.new
    gi, go = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    m2p, p2v, v2m = (n.new(t) for t in ("GeometryNodeMeshToPoints", "GeometryNodePointsToVolume",
                                          "GeometryNodeVolumeToMesh"))
    p2v.name = "p2v"
    p2v.resolution_mode = "VOXEL_SIZE"
    link(gi.outputs[0], m2p.inputs[0])
    link(m2p.outputs[0], p2v.inputs[0])
    link(p2v.outputs[0], v2m.inputs[0])
    link(v2m.outputs[0], go.inputs[0])
    return ng


# -- the screened Poisson candidate (pymeshlab, optional) -------------------------------------

POISSON_DEPTH = 8  # octree depth: 7 gives the same Chamfer, 9 is slower still


def have_pymeshlab() -> bool:
    try:
        import pymeshlab  # noqa: F401
    except ImportError:
        return False
    return True


def oriented_normals(xyz: np.ndarray, solid: meshing.Mesh, k: int = 16) -> np.ndarray:
    """PCA normals of ``k`` neighbours, each turned to agree with the nearest vertex normal of the
    mesher's solid (which knows inside from outside)."""
    from scipy.spatial import cKDTree

    p = xyz.astype(np.float64)
    nb = cKDTree(p).query(p, k=min(k, len(p)), workers=-1)[1]
    d = p[nb] - p[nb].mean(1, keepdims=True)
    nrm = np.linalg.eigh(np.einsum("nki,nkj->nij", d, d))[1][:, :, 0]
    a, b, c = (solid.vertices[solid.faces[:, i]].astype(np.float64) for i in range(3))
    fn = np.cross(b - a, c - a)
    vn = np.zeros((len(solid.vertices), 3))
    for i in range(3):
        np.add.at(vn, solid.faces[:, i], fn)
    ref = vn[cKDTree(solid.vertices).query(p, workers=-1)[1]]
    return nrm * np.where((nrm * ref).sum(1, keepdims=True) < 0, -1.0, 1.0)


def poisson_mesh(xyz: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=xyz.astype(np.float64), v_normals_matrix=nrm))
    ms.generate_surface_reconstruction_screened_poisson(depth=POISSON_DEPTH)
    m = ms.current_mesh()
    return m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int32)


def have_bpy() -> bool:
    try:
        import bpy  # noqa: F401
    except ImportError:
        return False
    return True


# -- clouds ------------------------------------------------------------------------------------

def chair_cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` coloured points on the chair example's surface; also the model forward time."""
    from PIL import Image

    from image2points.backend.model.reconstruct import Reconstructor

    model = Reconstructor.load()
    img = np.asarray(Image.open(ROOT / "examples" / "chair.png"))
    x = model.preprocess([img])
    s = measure(lambda: model.reconstruct_inputs(x), repeats=3)
    cloud = model.reconstruct_inputs(x)[0]
    m = meshing.mesh_points(cloud.xyz, cloud.rgb)
    xyz, col = meshing.surface_samples(m, n, seed)
    return xyz, np.clip(col + 0.5, 0, 255).astype(np.uint8), s.median


def split_clouds(n_shapes: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(family, cloud xyz, cloud rgb, GT points) for one view of each of the first test shapes: the
    default pipeline's cloud (``Reconstructor.reconstruct`` on the RGBA render, the input view
    lifted from the picture), which is what users mesh."""
    from image2points.backend.data.dataset import MakeConfig, make_samples, shape_seed
    from image2points.backend.model.reconstruct import Reconstructor

    model = Reconstructor.load()
    cfg = MakeConfig(views=1, novel=1, keep_raw=True)
    out = []
    for i in range(n_shapes):
        s = make_samples(shape_seed("test", i), cfg)
        cloud = model.reconstruct([s["raw"][0]])[0]  # the default pipeline: input view lifted
        gt = s["surf"] @ s["R_in"][0].T
        out.append((str(s["family"]), cloud.xyz, cloud.rgb, gt.astype(np.float32)))
    return out


def third_party_clouds(per_object: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    from image2points.backend.evaluate import third_party_set
    from image2points.backend.model.reconstruct import Reconstructor

    model = Reconstructor.load()
    raws: list[np.ndarray] = []
    _, gts, names = third_party_set(views=per_object, raws=raws)
    clouds = [model.reconstruct([raw])[0] for raw in raws]  # the default pipeline, as users mesh
    return [(n, c.xyz, c.rgb, g) for n, c, g in zip(names, clouds, gts)]


# -- scoring -----------------------------------------------------------------------------------

def mesh_samples(m: meshing.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """N_EVAL points on the mesh thinned from 8x as many as a cloud is (evaluate.subsample), so
    the mesh and the cloud are scored by the same stratified sampling."""
    pts, col = meshing.surface_samples(m, 8 * N_EVAL)
    i = subsample_index(pts)
    return pts[i], col[i]


def score_set(cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], with_gn: bool,
              with_poisson: bool = False) -> dict:
    rows: dict[str, list[dict[str, float]]] = {"cloud": [], "mesh": [], "shell": [], "gn": [], "poisson": []}
    tight = {"mesh": 0, "shell": 0, "gn": 0, "poisson": 0}
    colour, secs = [], []
    for _, xyz, rgb, gt in cases:
        g = subsample(gt)
        rows["cloud"].append(metrics(subsample(xyz), g))
        t0 = time.perf_counter()
        m = meshing.mesh_points(xyz, rgb)
        secs.append(time.perf_counter() - t0)
        pts, col = mesh_samples(m)
        rows["mesh"].append(metrics(pts, g))
        tight["mesh"] += meshing.is_watertight(m.faces)
        colour.append(float(np.abs(col - meshing.nearest_colors(xyz, rgb, pts)).mean()))
        sh = meshing.mesh_points(xyz, rgb, meshing.MeshParams(fill_holes=0))  # no closing: thin shells
        rows["shell"].append(metrics(mesh_samples(sh)[0], g))
        tight["shell"] += meshing.is_watertight(sh.faces)
        if with_gn:
            voxel = m.info["voxel"]
            v, f = gn_mesh(xyz, voxel, max(voxel, meshing.point_spacing(xyz)))
            gm = meshing.Mesh(v, f, np.zeros((len(v), 3), np.uint8))
            rows["gn"].append(metrics(mesh_samples(gm)[0], g))
            tight["gn"] += meshing.is_watertight(f)
        if with_poisson:
            v, f = poisson_mesh(xyz, oriented_normals(xyz, m))
            rows["poisson"].append(metrics(mesh_samples(meshing.Mesh(v, f, np.zeros((len(v), 3), np.uint8)))[0], g))
            tight["poisson"] += meshing.is_watertight(f)
    n = len(cases)
    res: dict[str, Any] = {"samples": n, "mesh_seconds_mean": float(np.mean(secs)),
                           "colour_err_mean": float(np.mean(colour))}
    for k, r in rows.items():
        if r:
            res[f"{k}_chamfer"] = float(np.mean([x["chamfer"] for x in r]))
            res[f"{k}_f2"] = float(np.mean([x["f2"] for x in r]))
            if k in tight:
                res[f"{k}_watertight"] = tight[k] / n
    return res


def run(quick: bool) -> dict:
    with torch_threads(1):
        return _run(quick)


def _run(quick: bool) -> dict:
    res: dict[str, Any] = {"threads": 1}
    rows = []
    gn = have_bpy()
    pois = have_pymeshlab()
    sizes = (20_000,) if quick else (100_000, 1_000_000)
    for n in sizes:
        xyz, rgb, fwd = chair_cloud(n)
        if "forward_b1_ms" not in res:
            res["forward_b1_ms"] = fwd * 1e3
            rows.append(("model forward + fuse, batch 1 (context)", f"{fwd * 1e3:9.2f} ms", ""))
        reps = 1 if n >= 1_000_000 else 3
        s = measure(lambda: meshing.mesh_points(xyz, rgb), repeats=reps)
        m = meshing.mesh_points(xyz, rgb)
        res[f"mesh_{n}_s"] = s.median
        res[f"mesh_{n}_faces"] = len(m.faces)
        rows.append((f"mesher (numpy+scipy+PyMCubes), {n} points", s.ms(),
                     f"{len(m.faces)} faces, watertight {meshing.is_watertight(m.faces)}"))
        if gn:
            voxel = m.info["voxel"]
            r = max(voxel, meshing.point_spacing(xyz))
            g = measure(lambda: gn_mesh(xyz, voxel, r), repeats=reps)
            gv, gf = gn_mesh(xyz, voxel, r)
            res[f"gn_{n}_s"] = g.median
            rows.append(("  Geometry Nodes Points to Volume -> Volume to Mesh", g.ms(),
                         f"{len(gf)} tris, watertight {meshing.is_watertight(gf)}; "
                         f"mesher is {g.median / s.median:.2f}x faster"))
        if pois:
            nrm = oriented_normals(xyz, m)  # not timed: the mesher's solid orients them
            ps = measure(lambda: poisson_mesh(xyz, nrm), repeats=1)
            pv, pf = poisson_mesh(xyz, nrm)
            res[f"poisson_{n}_s"] = ps.median
            rows.append((f"  screened Poisson (pymeshlab, depth {POISSON_DEPTH}), normals given", ps.ms(),
                         f"{len(pf)} tris, watertight {meshing.is_watertight(pf)}; "
                         f"mesher is {ps.median / s.median:.2f}x faster"))
    print(table("mesh time", rows, ("what", "median (min-max)", "note")))
    qrows = []
    sets = {"test": split_clouds(4 if quick else 40)}
    if gn and not quick:
        sets["third_party"] = third_party_clouds(1)
    for name, cases in sets.items():
        q = score_set(cases, with_gn=gn, with_poisson=pois)
        res[f"quality_{name}"] = q
        qrows.append((name, str(q["samples"]), f"{q['cloud_chamfer']:.4f}", f"{q['mesh_chamfer']:.4f}",
                      f"{q['shell_chamfer']:.4f}", f"{q.get('gn_chamfer', float('nan')):.4f}",
                      f"{q.get('poisson_chamfer', float('nan')):.4f}",
                      f"{q['mesh_watertight']:.0%} / {q['shell_watertight']:.0%} / "
                      f"{q.get('gn_watertight', float('nan')):.0%} / {q.get('poisson_watertight', float('nan')):.0%}",
                      f"{q['colour_err_mean']:.2f}"))
    print(table("mesh quality (Chamfer vs GT, unit ball; lower is better)", qrows,
                ("set", "n", "cloud", "mesh (default)", "mesh, fill 0", "GN mesh", "Poisson",
                 "watertight mesh / fill 0 / GN / Poisson", "colour err /255")))
    if not pois:
        print("screened Poisson not measured: pymeshlab is not installed (pip install pymeshlab)")
    # one surface or two: 20k points on a sphere of radius 0.8, enclosed volume / the ball's
    rng = np.random.default_rng(0)
    p = rng.normal(size=(20000, 3))
    p = (0.8 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
    ball = 4 / 3 * np.pi * 0.8 ** 3
    m = meshing.mesh_points(p)
    res["sphere_volume_ratio_mesh"] = meshing.signed_volume(m.vertices, m.faces) / ball
    line = f"sphere shell of points, enclosed volume / ball: mesher {res['sphere_volume_ratio_mesh']:.2f}"
    if gn:
        v, f = gn_mesh(p, m.info["voxel"], max(m.info["voxel"], meshing.point_spacing(p)))
        res["sphere_volume_ratio_gn"] = abs(meshing.signed_volume(v, f)) / ball
        line += f", Geometry Nodes {res['sphere_volume_ratio_gn']:.2f} (an inner wall: no inside)"
    print(line)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}


if __name__ == "__main__":
    print(run(quick=True))
