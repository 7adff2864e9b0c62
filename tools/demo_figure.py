"""README picture: what the cloud is made of, row by row, for one sample image.

    .venv/bin/python tools/demo_figure.py [--image examples/chair.png] [--out docs/img/demo_fidelity.png]

Rows: the model's own fused cloud; the input view lifted from the picture, the unseen side the
model's alone (coloured from the picture; the pipeline before ``lift.MIRROR``); the default (the
visible side's mirror image across the object's mirror plane takes over part of the unseen side).
Each row is the input and the batch's framed camera ring (``addon.render.render_ring``, Cycles,
CPU), so the views are the ones a user gets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (tile.shape[1], 20), (255, 255, 255))
    ImageDraw.Draw(bar).text((6, 4), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(bar), tile], 0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(ROOT / "examples" / "chair.png"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "demo_fidelity.png"))
    ap.add_argument("--size", type=int, default=256, help="pixels per tile")
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()

    import bpy
    from PIL import Image

    from image2points.addon import points, render
    from image2points.backend.images import decode_image
    from image2points.backend.model import lift
    from image2points.backend.model.reconstruct import Reconstructor

    model = Reconstructor.load()
    img = decode_image(Path(args.image).read_bytes())
    rows = [("model cloud only", dict(lift=False), False),
            ("input view lifted from the picture, unseen side the model's (coloured from the picture)",
             {}, False),
            ("now: the same, the visible side's mirror image takes over part of the unseen side (default)",
             {}, True)]
    inp = Image.fromarray(img).convert("RGBA")
    inp.thumbnail((args.size, args.size))
    white = Image.new("RGBA", (args.size, args.size), (255, 255, 255, 255))
    white.alpha_composite(inp, ((args.size - inp.width) // 2, (args.size - inp.height) // 2))
    first = np.asarray(white.convert("RGB"))
    tmp = tempfile.mkdtemp(prefix="i2p-demofig-")
    strips = []
    saved = lift.MIRROR
    for i, (title, kw, mirror) in enumerate(rows):
        lift.MIRROR = mirror
        cloud = model.reconstruct([img], **kw)[0]
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        render.configure_render(scene, "CYCLES", args.samples, args.size)
        render.ensure_lighting(scene)
        obj = points.import_reconstruction(f"row{i}", cloud.xyz, cloud.rgb, size=2.0, radius=0.012)  # batch default
        paths = render.render_ring(obj, tmp, f"row{i}", report=print)
        views = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        strip = np.concatenate([first, *views], 1)
        strips.append(label(strip, f"{title} ({len(cloud.xyz):,} points)"))
    lift.MIRROR = saved
    out = Image.fromarray(np.concatenate(strips, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.quantize(256).save(args.out, optimize=True)  # a palette keeps the committed picture small
    print(f"wrote {args.out} ({out.width}x{out.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
