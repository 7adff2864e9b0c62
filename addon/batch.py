"""Headless entry: image(s) -> backend -> point object(s) in saved .blend file(s), novel views, PLY.

    python -m image2points.addon.batch --image chair.png --out out/chair.blend --views 4
    blender -b -P addon/batch.py -- --image chair.png --out out/chair.blend

Many images (``--image`` repeated and/or ``--images FOLDER``):

    python -m image2points.addon.batch --images photos/ --out-dir out/            # one .blend per image
    python -m image2points.addon.batch --image a.png --image b.png --layout collections --out out/all.blend

``--layout per-file`` (default with --out-dir) writes DIR/<name>.blend + <name>.ply per image;
``--layout collections`` puts each image's object in its own collection of one .blend (--out),
side by side, with PLYs and renders next to it. One progress line per image.

Exit code 0 when every image succeeded, 1 when any failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file by `blender -P addon/batch.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from addon.batch import main as _main

    sys.exit(_main())

import numpy as np

from .core.client import DEFAULT_ENDPOINT, BackendError, Client, JobResult, guess_media, points_from_result

# PNG, JPEG and WebP go to the backend as they are; the others are decoded by Blender first
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".tga", ".exr", ".hdr")


class UsageError(Exception):
    pass


@dataclass
class Item:
    image: str
    name: str
    blend: str  # where this image's object is saved
    ply: str
    out_dir: str  # renders


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    p = argparse.ArgumentParser(prog="image2points-batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", action="append", default=[],
                   help="input image (PNG/JPEG/WebP; alpha = mask); repeat for several")
    p.add_argument("--images", default=None, help="a folder: every PNG/JPEG/WebP in it")
    p.add_argument("--out", default=None,
                   help="output .blend (one image, or all of them with --layout collections)")
    p.add_argument("--out-dir", default=None, help="output folder for --layout per-file")
    p.add_argument("--layout", choices=["per-file", "collections"], default=None,
                   help="several images: one .blend each (default) or one collection each")
    p.add_argument("--ply", default=None, help="output .ply (one image; default: next to the .blend)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    p.add_argument("--views", type=int, default=4, help="novel views to render (0 = none)")
    p.add_argument("--resolution", type=int, default=512, help="novel view size in pixels")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--size", type=float, default=2.0, help="object size in metres")
    p.add_argument("--radius", type=float, default=0.012, help="point radius in metres")
    p.add_argument("--density", type=int, default=None,
                   help="points per cloud, 10000-1000000 (default: the backend's, ~100k)")
    p.add_argument("--max-points", type=int, default=None, help="cap on the points per cloud")
    p.add_argument("--colours", choices=["PHOTO", "LIT"], default="PHOTO",
                   help="point material: as photographed (emission, default) or lit (albedo)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per image")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--mesh", action="store_true",
                   help="also make a watertight coloured mesh object and export <name>_mesh.<fmt> "
                        "next to the .blend")
    p.add_argument("--mesh-format", choices=["glb", "ply", "obj"], default="glb")
    p.add_argument("--mask", default=None, metavar="FILE",
                   help="object mask for the one --image (white or opaque = object); default: the "
                        "image's alpha, else the automatic cut. <name>_mask.png is always written")
    p.add_argument("--strict", action="store_true",
                   help="fail an image whose automatic cut looks wrong, instead of warning")
    p.add_argument("--keep-scene", action="store_true",
                   help="add to the open scene instead of starting from an empty one "
                        "(one image, or --layout collections)")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[str, list[Item]]:
    """(layout, items) from the arguments; UsageError for anything inconsistent."""
    images = [os.path.abspath(p) for p in args.image]
    if args.images:
        if not os.path.isdir(args.images):
            raise UsageError(f"not a folder: {args.images}")
        images += sorted(os.path.join(os.path.abspath(args.images), f) for f in os.listdir(args.images)
                         if f.lower().endswith(IMAGE_EXTS))
    if not images:
        raise UsageError("no input images (use --image FILE or --images FOLDER)")
    for path in images:
        if not os.path.isfile(path):
            raise UsageError(f"image not found: {path}")
    layout = args.layout
    if layout is None:
        layout = "single" if len(images) == 1 and args.out and not args.out_dir else (
            "per-file" if args.out_dir else "collections" if args.out else "")
    if not layout:
        raise UsageError("say where to write: --out FILE.blend or --out-dir FOLDER")
    if args.mask and len(images) > 1:
        raise UsageError("--mask goes with one --image")
    if args.mask and not os.path.isfile(args.mask):
        raise UsageError(f"mask not found: {args.mask}")
    if args.ply and len(images) > 1:
        raise UsageError("--ply names one file; with several images PLYs go next to the .blend(s)")
    names: list[str] = []
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    if layout == "single":
        blend = os.path.abspath(args.out)
        return layout, [Item(images[0], names[0], blend,
                             os.path.abspath(args.ply) if args.ply else os.path.splitext(blend)[0] + ".ply",
                             os.path.dirname(blend))]
    if layout == "per-file":
        if not args.out_dir:
            raise UsageError("--layout per-file needs --out-dir FOLDER")
        if args.keep_scene and len(images) > 1:
            raise UsageError("--keep-scene works with one image or --layout collections")
        d = os.path.abspath(args.out_dir)
        return layout, [Item(p, n, os.path.join(d, n + ".blend"),
                             os.path.abspath(args.ply) if args.ply else os.path.join(d, n + ".ply"), d)
                        for p, n in zip(images, names)]
    if not args.out:
        raise UsageError("--layout collections needs --out FILE.blend")
    blend = os.path.abspath(args.out)
    d = os.path.abspath(args.out_dir) if args.out_dir else os.path.dirname(blend)
    return layout, [Item(p, n, blend, os.path.abspath(args.ply) if args.ply else
                         os.path.join(d, n + ".ply"), d) for p, n in zip(images, names)]


def reconstruct_file(client: Client, path: str, max_points: int | None, timeout: float,
                     density: int | None = None, mask: str | None = None,
                     strict: bool = False) -> tuple[JobResult, bytes]:
    from .image_input import file_png  # needs bpy: any format Blender opens

    data = file_png(path)
    blobs, media = {"image": data}, {"image": guess_media(data)}
    if mask:
        blobs["mask"] = file_png(mask)
        media["mask"] = guess_media(blobs["mask"])
    params: dict[str, Any] = {}
    if density is not None:
        params["density"] = density
    if max_points is not None:
        params["max_points"] = max_points
    if strict:
        params["strict"] = True
    job = client.submit("reconstruct", params, blobs, media)

    def show(value: float, stage: str, _msg: object) -> None:
        print(f"  {os.path.basename(path)}: {value * 100:5.1f}% {stage}", flush=True)

    return client.wait(job, timeout=timeout, on_progress=show), data


def import_one(args: argparse.Namespace, item: Item, info: dict[str, Any], result: JobResult,
               data: bytes, collection: Any, location: tuple[float, float, float]) -> Any:
    """The result as an object with provenance, its novel views and its PLY."""
    import bpy

    from . import points, render
    from .core.plyio import write_ply

    xyz, rgb = points_from_result(result)
    scene: Any = bpy.context.scene
    obj = points.import_reconstruction(
        item.name, xyz, rgb, size=args.size, radius=args.radius, location=location,
        collection=collection,
        provenance={
            "source_image": os.path.basename(item.image),
            "source_sha256": hashlib.sha256(data).hexdigest(),
            "backend_version": str(info.get("version", "")),
            "model": str(result.meta.get("model", "")),
            "model_sha256": str(result.meta.get("model_sha256", "")),
            "job": result.job,
            "mask_source": str(result.meta.get("mask_source", "")),
            "warnings": "; ".join(f"{w.get('code')}: {w['message']}" for w in result.warnings),
        })
    points.set_colour_mode(args.colours)
    print(f"imported {len(xyz)} points as '{obj.name}'", flush=True)
    mask = result.mask
    if mask is not None:
        from .image_input import save_png

        path = os.path.join(item.out_dir, f"{item.name}_mask.png")
        save_png(np.dstack([mask, mask, mask, np.full_like(mask, 255)]), path)
        print(f"saved {path} (mask: {result.meta.get('mask_source', '?')})", flush=True)
    if args.views > 0:
        render.configure_render(scene, "CYCLES", args.samples, args.resolution)
        render.ensure_lighting(scene)
        others = [o for o in scene.objects if o is not obj and ("i2p_point_count" in o or "i2p_mesh_faces" in o)
                  and not o.hide_render]
        for o in others:  # side-by-side clouds stay out of this one's views
            o.hide_render = True
        try:
            views = render.render_ring(obj, item.out_dir, item.name, args.views, args.elevation,
                                       report=lambda line: print(f"  {line}", flush=True))
        finally:
            for o in others:
                o.hide_render = False
        sheet = os.path.join(item.out_dir, f"{item.name}_contact_sheet.png")
        write_sheet(item.image, result, views, sheet, args.resolution)
        print(f"  contact sheet {sheet}", flush=True)
    wxyz, wrgb = points.world_points(obj)
    write_ply(item.ply, wxyz, wrgb if wrgb is not None else rgb,
              comment=f"Image2Points {item.name} Blender world coordinates (Z up, metres)")
    print(f"saved {item.ply}", flush=True)
    return obj


def mesh_one(args: argparse.Namespace, client: Client, item: Item, obj: Any) -> Any:
    """``--mesh``: the point object -> a mesh object beside it, exported next to the .blend."""
    import bpy

    from . import mesh, mesh_export

    m = mesh.make_mesh(bpy.context, obj, client, mesh.mesh_params(None), timeout=args.timeout)
    path = os.path.join(os.path.dirname(item.blend), f"{item.name}_mesh.{args.mesh_format}")
    mesh_export.export_mesh(bpy.context, m, path, args.mesh_format.upper())
    print(f"meshed '{m.name}' ({m['i2p_mesh_faces']} faces), saved {path}", flush=True)
    return m


def write_sheet(image: str, result: JobResult, views: list[str], out_path: str, size: int) -> None:
    """input | cut-out | views in one row. The cut-out is the mask the backend used (the input with
    its background dimmed, as the panel shows it), else the input's alpha."""
    import numpy as np

    from .cutout import dimmed
    from .image_input import image_pixels_u8
    from .views import contact_sheet, load_image

    rgba = image_pixels_u8(load_image(image))
    mask = result.mask
    cut = dimmed(mask if mask is not None else rgba[..., 3], rgba, side=max(rgba.shape[:2]))
    photo = rgba.copy()
    photo[..., :3] = np.where(rgba[..., 3:] > 0, rgba[..., :3], 255)  # transparent shows white
    photo[..., 3] = 255
    contact_sheet([_fit_tile(photo, size), _fit_tile(cut, size), *views], out_path,
                  cols=2 + len(views))


def _fit_tile(rgba, size: int):  # type: ignore[no-untyped-def]
    """Nearest-neighbour resize into a ``size`` square, centred on white (numpy only)."""
    import numpy as np

    h, w = rgba.shape[:2]
    k = size / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    ys = np.minimum((np.arange(nh) + 0.5) / k, h - 1).astype(int)
    xs = np.minimum((np.arange(nw) + 0.5) / k, w - 1).astype(int)
    tile = np.full((size, size, 4), 255, np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    tile[y0:y0 + nh, x0:x0 + nw] = rgba[ys][:, xs]
    return tile


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        layout, items = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import bpy

    for item in items:
        os.makedirs(item.out_dir, exist_ok=True)
        os.makedirs(os.path.dirname(item.blend), exist_ok=True)
    try:
        client = Client(args.endpoint, connect_timeout=args.connect_timeout)
    except Exception as exc:  # noqa: BLE001 - a malformed endpoint is a usage error
        print(f"error: bad endpoint {args.endpoint!r}: {exc}", file=sys.stderr)
        return 2
    failed = 0
    with client:
        try:
            info = client.hello(timeout=args.connect_timeout)
        except BackendError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"backend {info.get('version')} on {info.get('device')}, "
              f"model {info.get('model', {}).get('name', '?')}", flush=True)
        if layout == "collections" and not args.keep_scene:
            bpy.ops.wm.read_factory_settings(use_empty=True)
        placed = 0
        for i, item in enumerate(items, 1):
            tag = f"[{i}/{len(items)}] {os.path.basename(item.image)}"
            t0 = time.perf_counter()
            try:
                result, data = reconstruct_file(client, item.image, args.max_points, args.timeout,
                                                args.density, args.mask, args.strict)
                points_from_result(result)  # a malformed result fails here, before any scene work
                for w in result.warnings:
                    print(f"{tag}: warning {w.get('code')}: {w['message']}", flush=True)
            except (BackendError, OSError) as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
                print(f"{tag}: FAILED {exc}", flush=True)
                continue
            t_backend = time.perf_counter() - t0
            if layout != "collections" and not (args.keep_scene and len(items) == 1):
                bpy.ops.wm.read_factory_settings(use_empty=True)
            scene: Any = bpy.context.scene
            cursor = tuple(float(c) for c in scene.cursor.location)
            collection = None
            location: tuple[float, float, float] = (cursor[0], cursor[1], cursor[2])
            if layout == "collections":
                collection = bpy.data.collections.new(item.name)
                scene.collection.children.link(collection)
                location = (cursor[0] + placed * 1.5 * args.size, cursor[1], cursor[2])
            obj = import_one(args, item, info, result, data, collection, location)
            if args.mesh:
                try:
                    mesh_one(args, client, item, obj)
                except (BackendError, OSError, RuntimeError) as exc:
                    failed += 1
                    print(f"error: mesh: {exc}", file=sys.stderr)
            placed += 1
            if layout != "collections":
                bpy.ops.wm.save_as_mainfile(filepath=item.blend)
                print(f"saved {item.blend}", flush=True)
            print(f"{tag}: ok, {obj['i2p_point_count']} points ({t_backend:.2f} s backend, "
                  f"{time.perf_counter() - t0:.2f} s total)", flush=True)
        if layout == "collections" and placed:
            bpy.ops.wm.save_as_mainfile(filepath=items[0].blend)
            print(f"saved {items[0].blend} ({placed} collections)", flush=True)
    if len(items) > 1:
        print(f"{len(items) - failed}/{len(items)} images succeeded", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    # ``python -m image2points.addon.batch`` runs the bpy module, which can crash in interpreter teardown once
    # an add-on with Python property callbacks was registered (the glTF exporter is one; see
    # tests/conftest.py): leave with main()'s status instead, after flushing
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
