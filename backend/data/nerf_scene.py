"""Posed test scenes for the NeRF backend, rendered by Blender itself (the ``bpy`` wheel).

Why: the NeRF code must be checked against the exact camera convention Blender writes, so the
project makes its own ``transforms.json`` datasets from Blender primitives instead of downloading
one. Two scenes exist:

* ``blocks``  - the tuning scene: coloured primitives on a checkered ground plate, sun + sky light.
* ``gallery`` - the "never seen" scene, never used for tuning: floating objects (torus, Suzanne,
  ico sphere, cylinder), glossy/striped materials, point + area lights, no ground.

Rendering: Cycles on the CPU, fixed samples, denoiser off, Standard view transform, Film
transparent (RGBA PNG, alpha = coverage), box pixel filter. Training views are random on the
upper hemisphere; test views lie on a separate orbit (different radius and elevations), so the two
sets never share a camera. Everything is deterministic for a given seed. Frames are split over
worker processes (each builds the same scene and renders its share), which is what makes the
generator parallel-friendly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from image2points.addon.core.camera import look_at

SCENES = ("blocks", "gallery")


@dataclass
class SceneSpec:
    """Everything that determines a rendered dataset (stored next to it as ``scene.json``)."""

    name: str = "blocks"
    seed: int = 0
    width: int = 100
    height: int = 100
    n_train: int = 100
    n_test: int = 20
    samples: int = 64
    camera_angle_x: float = 0.6911112070083618  # Blender's default 50 mm lens on a 36 mm sensor
    radius: float = 4.0
    test_radius: float = 4.4
    aabb: list[list[float]] = field(default_factory=lambda: [[-1.3, -1.3, -0.1], [1.3, 1.3, 1.5]])


def camera_poses(spec: SceneSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train poses (random upper hemisphere) and test poses (separate orbit), both c2w 4x4."""
    rng = np.random.default_rng(spec.seed + 1000)
    target = np.array([0.0, 0.0, 0.35 if spec.name == "blocks" else 0.6])
    train = []
    for _ in range(spec.n_train):
        az = rng.uniform(0, 2 * math.pi)
        el = math.asin(rng.uniform(math.sin(math.radians(12)), math.sin(math.radians(80))))
        eye = target + spec.radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        train.append(look_at(eye, target))
    test = []
    for i in range(spec.n_test):
        el = math.radians(22.0 if i % 2 == 0 else 48.0)
        az = 2 * math.pi * (i + 0.5) / spec.n_test + 0.1
        eye = target + spec.test_radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        test.append(look_at(eye, target))
    return train, test


# ----------------------------------------------------------------------------------------------
# Blender side (only imported inside worker processes)


def _material(bpy, name: str, color, roughness: float = 1.0, specular: float = 0.0, metallic: float = 0.0,
              checker: tuple | None = None):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Specular IOR Level"].default_value = specular
    if checker is not None:
        scale, color2 = checker
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Color1"].default_value = (*color, 1.0)
        tex.inputs["Color2"].default_value = (*color2, 1.0)
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _add(bpy, op, mat, **kw):
    op(**kw)
    obj = bpy.context.active_object
    obj.data.materials.append(mat)
    return obj


def _build_blocks(bpy, rng: np.random.Generator) -> None:
    m = bpy.ops.mesh
    ground = _material(bpy, "ground", (0.85, 0.85, 0.8), checker=(6.0, (0.25, 0.3, 0.45)))
    _add(bpy, m.primitive_plane_add, ground, size=2.4, location=(0, 0, 0))
    palette = [(0.8, 0.1, 0.08), (0.1, 0.35, 0.85), (0.1, 0.7, 0.2), (0.95, 0.75, 0.1), (0.7, 0.2, 0.75)]
    jit = lambda: rng.uniform(-0.08, 0.08)  # noqa: E731
    _add(bpy, m.primitive_uv_sphere_add, _material(bpy, "red", palette[0]), radius=0.35,
         location=(-0.45 + jit(), -0.35 + jit(), 0.35), segments=48, ring_count=24)
    bpy.ops.object.shade_smooth()
    _add(bpy, m.primitive_cube_add, _material(bpy, "blue", palette[1]), size=0.5,
         location=(0.45 + jit(), -0.3 + jit(), 0.25), rotation=(0, 0, rng.uniform(0, 1.5)))
    _add(bpy, m.primitive_cylinder_add, _material(bpy, "green", palette[2]), radius=0.22, depth=0.8,
         location=(0.3 + jit(), 0.5 + jit(), 0.4), vertices=48)
    _add(bpy, m.primitive_cone_add, _material(bpy, "yellow", palette[3]), radius1=0.3, depth=0.7,
         location=(-0.5 + jit(), 0.45 + jit(), 0.35), vertices=48)
    _add(bpy, m.primitive_uv_sphere_add, _material(bpy, "violet", palette[4]), radius=0.15,
         location=(0.0 + jit(), 0.0 + jit(), 0.15), segments=32, ring_count=16)
    bpy.ops.object.shade_smooth()
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.data.angle = math.radians(2.0)
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    bpy.context.scene.collection.objects.link(sun)
    _world(bpy, (0.55, 0.6, 0.7), 0.8)


def _build_gallery(bpy, rng: np.random.Generator) -> None:
    import mathutils  # type: ignore[import-not-found]

    m = bpy.ops.mesh
    _add(bpy, m.primitive_torus_add, _material(bpy, "copper", (0.9, 0.45, 0.2), roughness=0.35, specular=0.5),
         major_radius=0.55, minor_radius=0.16, location=(0, 0, 0.35), rotation=(math.radians(60), 0, rng.uniform(0, 3)))
    bpy.ops.object.shade_smooth()
    _add(bpy, m.primitive_monkey_add, _material(bpy, "teal", (0.1, 0.6, 0.6), roughness=0.6, specular=0.3),
         size=0.7, location=(0.1, 0.15, 1.05), rotation=(0, 0, rng.uniform(-0.5, 0.5)))
    bpy.ops.object.shade_smooth()
    _add(bpy, m.primitive_ico_sphere_add,
         _material(bpy, "stripes", (0.95, 0.95, 0.9), checker=(5.0, (0.6, 0.05, 0.3))),
         radius=0.3, subdivisions=2, location=(-0.75, -0.45, 0.55))
    _add(bpy, m.primitive_cylinder_add, _material(bpy, "slate", (0.25, 0.25, 0.3), roughness=0.8),
         radius=0.12, depth=1.1, location=(0.75, -0.5, 0.55), rotation=(0.3, 0.2, 0))
    for name, kind, loc, energy in (("key", "POINT", (2.0, -2.0, 3.0), 900.0), ("fill", "AREA", (-2.5, 1.0, 2.0), 500.0)):
        light = bpy.data.lights.new(name, kind)
        light.energy = energy
        if kind == "AREA":
            light.size = 1.5
        obj = bpy.data.objects.new(name, light)
        bpy.context.scene.collection.objects.link(obj)
        # An area light emits down its local -Z, like a camera looks: reuse the look-at matrix.
        obj.matrix_world = mathutils.Matrix(look_at(np.array(loc), np.array([0.0, 0.0, 0.5])).tolist())
    _world(bpy, (0.35, 0.3, 0.3), 0.6)


def _world(bpy, color, strength: float) -> None:
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (*color, 1.0)
    bg.inputs["Strength"].default_value = strength
    bpy.context.scene.world = world


def _setup_scene(bpy, spec: SceneSpec, threads: int):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = spec.samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.cycles.seed = spec.seed
    scene.cycles.max_bounces = 3
    scene.cycles.diffuse_bounces = 2
    scene.cycles.glossy_bounces = 2
    scene.cycles.transparent_max_bounces = 2
    scene.cycles.caustics_reflective = False
    scene.cycles.caustics_refractive = False
    scene.cycles.filter_type = "BOX"
    scene.cycles.filter_width = 1.0
    r.film_transparent = True
    r.resolution_x, r.resolution_y, r.resolution_percentage = spec.width, spec.height, 100
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.threads_mode = "FIXED"
    r.threads = max(1, threads)
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    rng = np.random.default_rng(spec.seed)
    {"blocks": _build_blocks, "gallery": _build_gallery}[spec.name](bpy, rng)
    cam_data = bpy.data.cameras.new("cam")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = 0.5 * cam_data.sensor_width / math.tan(0.5 * spec.camera_angle_x)
    cam_data.clip_start, cam_data.clip_end = 0.05, 100.0
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam


def _render_worker(job_file: str) -> None:
    """Render a share of frames in this (fresh) process; writes (split, stem, matrix_world) rows."""
    import bpy  # type: ignore[import-not-found]
    import mathutils  # type: ignore[import-not-found]

    job = json.loads(Path(job_file).read_text())
    spec = SceneSpec(**job["spec"])
    scene, cam = _setup_scene(bpy, spec, threads=1)
    done = []
    for split, stem, c2w in job["jobs"]:
        cam.matrix_world = mathutils.Matrix(c2w)
        scene.render.filepath = str(Path(job["out"]) / split / f"{stem}.png")
        bpy.ops.render.render(write_still=True)
        # Read back what Blender actually used: this is the c2w written into transforms.json.
        done.append((split, stem, [list(map(float, row)) for row in cam.matrix_world]))
    Path(job["result"]).write_text(json.dumps(done))


def make_scene(name: str = "blocks", out: str | os.PathLike | None = None, *, seed: int = 0, width: int = 100,
               height: int | None = None, n_train: int = 100, n_test: int = 20, samples: int = 64,
               workers: int | None = None, force: bool = False, log=print) -> Path:
    """Render scene ``name`` into ``out`` (default ``data/nerf/<name>``); reuse it if up to date.

    Returns the dataset folder holding ``transforms_train.json``, ``transforms_test.json``,
    ``train/*.png``, ``test/*.png`` and ``scene.json``.
    """
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; choose one of {', '.join(SCENES)}")
    spec = SceneSpec(name=name, seed=seed, width=width, height=height or width, n_train=n_train, n_test=n_test,
                     samples=samples)
    if name == "gallery":
        spec.aabb = [[-1.3, -1.3, -0.2], [1.3, 1.3, 1.6]]
    out_dir = Path(out) if out is not None else Path("data/nerf") / name
    marker = out_dir / "scene.json"
    if not force and marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        return out_dir
    train, test = camera_poses(spec)
    jobs = [("train", f"r_{i:03d}", m) for i, m in enumerate(train)] + [("test", f"r_{i:03d}", m) for i, m in enumerate(test)]
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 4))
    for split in ("train", "test"):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict[str, list] = {"train": [], "test": []}
    # Plain subprocesses, not multiprocessing: a spawned child inherits the parent's sys.path, and
    # once bpy is imported there that path holds Blender's own scripts/modules/bpy shadowing the wheel.
    with tempfile.TemporaryDirectory(prefix="i2p-nerf-scene-") as tmp:
        procs = []
        for w in range(workers):
            share = [(s, stem, m.tolist()) for s, stem, m in jobs[w::workers]]
            if not share:
                continue
            job_file = Path(tmp) / f"job_{w}.json"
            job_file.write_text(json.dumps({"spec": asdict(spec), "jobs": share, "out": str(out_dir.resolve()),
                                            "result": str(Path(tmp) / f"result_{w}.json")}))
            env = dict(os.environ)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            procs.append((subprocess.Popen([sys.executable, "-m", __spec__.name, "--worker", str(job_file)],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                          Path(tmp) / f"result_{w}.json"))
        for proc, result in procs:
            _, err = proc.communicate()
            if proc.returncode != 0 or not result.exists():
                raise RuntimeError(f"scene render worker failed (exit {proc.returncode}):\n"
                                   f"{err.decode(errors='replace')[-2000:]}")
            for split, stem, m in json.loads(result.read_text()):
                results[split].append((stem, m))
    for split in results:
        results[split].sort()
    elapsed = time.perf_counter() - t0
    n = len(jobs)
    log(f"rendered {n} frames of {name!r} at {spec.width}x{spec.height}, {spec.samples} spp, "
        f"{workers} workers in {elapsed:.1f} s ({elapsed / n:.2f} s/frame)")
    for split in ("train", "test"):
        doc = {
            "camera_angle_x": spec.camera_angle_x,
            "w": spec.width,
            "h": spec.height,
            "aabb": spec.aabb,
            "background": "transparent (RGBA, alpha = coverage); evaluate on white",
            "frames": [{"file_path": f"./{split}/{stem}", "transform_matrix": m} for stem, m in results[split]],
        }
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(doc, indent=1))
    marker.write_text(json.dumps(asdict(spec), indent=1))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="blocks", choices=SCENES)
    p.add_argument("--out", default=None)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--force", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _render_worker(a.worker)
        return 0
    out = make_scene(a.name, a.out, seed=a.seed, width=a.size, n_train=a.train, n_test=a.test, samples=a.samples,
                     workers=a.workers, force=a.force)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
