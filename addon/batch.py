"""Headless entry: image(s) -> backend -> point object(s) in a saved .blend, novel views, PLY.

    python -m addon.batch --image chair.png --out out/chair.blend --views 4
    blender -b -P addon/batch.py -- --image chair.png --out out/chair.blend

Exit code 0 when every image succeeded, 1 when any failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file by `blender -P addon/batch.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from addon.batch import main as _main

    sys.exit(_main())

from .client import DEFAULT_ENDPOINT, BackendError, Client, guess_media, points_from_result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    p = argparse.ArgumentParser(prog="image2points-batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="input image (PNG/JPEG/WebP; alpha = mask)")
    p.add_argument("--out", required=True, help="output .blend")
    p.add_argument("--ply", default=None, help="output .ply (default: next to the .blend)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    p.add_argument("--views", type=int, default=4, help="novel views to render (0 = none)")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--size", type=float, default=2.0, help="object size in metres")
    p.add_argument("--radius", type=float, default=0.012, help="point radius in metres")
    p.add_argument("--max-points", type=int, default=200_000)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per image")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--keep-scene", action="store_true",
                   help="add to the open scene instead of starting from an empty one")
    return p.parse_args(argv)


def reconstruct_file(client: Client, path: str, max_points: int, timeout: float
                     ) -> tuple[object, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    job = client.submit("reconstruct", {"max_points": max_points}, {"image": data},
                        {"image": guess_media(data)})

    def show(value: float, stage: str, _msg: object) -> None:
        print(f"  {os.path.basename(path)}: {value * 100:5.1f}% {stage}", flush=True)

    return client.wait(job, timeout=timeout, on_progress=show), data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import bpy

    from . import points, render

    if not os.path.isfile(args.image):
        print(f"error: image not found: {args.image}", file=sys.stderr)
        return 2
    name = os.path.splitext(os.path.basename(args.image))[0]
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    ply_path = args.ply or os.path.splitext(os.path.abspath(args.out))[0] + ".ply"
    t0 = time.perf_counter()
    try:
        with Client(args.endpoint, connect_timeout=args.connect_timeout) as client:
            info = client.hello(timeout=args.connect_timeout)
            print(f"backend {info.get('version')} on {info.get('device')}, "
                  f"model {info.get('model', {}).get('name', '?')}", flush=True)
            result, data = reconstruct_file(client, args.image, args.max_points, args.timeout)
            xyz, rgb = points_from_result(result)
    except (BackendError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    t_backend = time.perf_counter() - t0

    if not args.keep_scene:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = points.import_reconstruction(
        name, xyz, rgb, size=args.size, radius=args.radius,
        location=tuple(scene.cursor.location),
        provenance={
            "source_image": os.path.basename(args.image),
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "backend_version": str(info.get("version", "")),
            "model": str(result.meta.get("model", "")),
            "model_sha256": str(result.meta.get("model_sha256", "")),
            "job": result.job,
        })
    print(f"imported {len(xyz)} points as '{obj.name}' ({t_backend:.2f} s backend)", flush=True)

    pngs: list[str] = []
    if args.views > 0:
        render.configure_render(scene, "CYCLES", args.samples, args.resolution)
        render.ensure_lighting(scene)
        pngs = render.render_ring(obj, out_dir, name, args.views, args.elevation)
        for p in pngs:
            print(f"rendered {p}", flush=True)

    from .plyio import write_ply

    wxyz, wrgb = points.world_points(obj)
    write_ply(ply_path, wxyz, wrgb if wrgb is not None else rgb,
              comment=f"Image2Points {name} Blender world coordinates (Z up, metres)")
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.out))
    print(f"saved {os.path.abspath(args.out)}\nsaved {ply_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
