"""README picture: points | mesh for sample images, rendered by the add-on's own render code.

    .venv/bin/python tools/mesh_picture.py [--out docs/img/mesh.png] [--images chair.png mug.png car.png]

Runs the model and the mesher in-process (no server) and the bpy wheel for the renders: each row
is one image, the point object and the Make Mesh result seen by the same camera (Cycles, CPU).
Extra columns via ``--variants``: e.g. ``fill_holes=-1`` shows the solid (auto fill) mesh.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "mesh.png"))
    ap.add_argument("--images", nargs="+", default=["chair.png", "mug.png", "car.png"])
    ap.add_argument("--variants", nargs="*", default=[], help="extra mesh columns: key=value,...")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()

    import bpy
    from PIL import Image

    from image2points.addon import mesh, points, render
    from image2points.addon.core import camera
    from image2points.backend.model import meshing
    from image2points.backend.model.reconstruct import Reconstructor

    model = Reconstructor.load()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    render.configure_render(scene, "CYCLES", args.samples, args.resolution)
    render.ensure_lighting(scene)
    tmp = tempfile.mkdtemp(prefix="i2p-meshpic-")
    columns = [{}] + [dict(kv.split("=") for kv in v.split(",")) for v in args.variants]
    rows = []
    for name in args.images:
        img = np.asarray(Image.open(ROOT / "examples" / name))
        cloud = model.reconstruct([img])[0]
        pts = points.import_reconstruction(name, cloud.xyz, cloud.rgb, size=2.0, radius=0.02)
        objs = [pts]
        local, rgb = points.point_arrays(pts)
        for extra in columns:
            p = meshing.MeshParams(up=2, **{k: int(v) for k, v in extra.items()})
            m = meshing.mesh_points(local, rgb, p)
            obj = mesh.build_mesh_object(f"{name} mesh", m.vertices, m.faces, m.colors, scene.collection)
            obj.matrix_world = pts.matrix_world.copy()
            objs.append(obj)
            print(f"{name}: {len(cloud.xyz)} points -> {m.info}", flush=True)
        centre, radius = render.object_bounds(pts)
        # a three-quarter view, 35 degrees round from the input camera (at -Y), framed on the
        # points like the batch's views (camera.framed_pose)
        pose = camera.ring_poses(1, camera.fit_radius(radius), 20.0, centre, -55.0)[0]
        pose = camera.framed_pose(render.cloud_points(pts), pose, 50.0, 36.0, args.resolution,
                                  args.resolution)
        cam = render.add_camera(f"{name} cam", pose, 50.0, collection=scene.collection)
        scene.camera = cam
        tiles = []
        for i, obj in enumerate(objs):
            for o in objs:
                o.hide_render = o is not obj
            path = os.path.join(tmp, f"{Path(name).stem}_{i}.png")
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
            tiles.append(np.asarray(Image.open(path).convert("RGBA")))
        for o in objs:
            o.hide_render = True
        rows.append(np.concatenate(tiles, 1))
    sheet = np.concatenate(rows, 0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # a 256-colour palette keeps the committed picture small (~3x smaller than RGBA)
    Image.fromarray(sheet[..., :3]).quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    os._exit(main())  # the bpy module may crash in interpreter teardown (tests/conftest.py)
