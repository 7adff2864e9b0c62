"""Render the shipped sample inputs (examples/*.png) from held-out (test-split) procedural shapes.

    python tools/make_examples.py
Deterministic; seeds are in the test range, so no example shape is ever trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from image2points.backend.data.dataset import SPLIT_SEED_BASE
from image2points.backend.data.render import Caster, normalizer, render_input, view_rotation
from image2points.backend.data.shapes import make_shape

OUT = Path(__file__).resolve().parents[1] / "examples"
# name -> (family, shape index in the test split range beyond the rendered 200, azimuth, elevation)
EXAMPLES = {"chair": ("chair", 901, 35.0, 20.0), "airplane": ("airplane", 902, 60.0, 25.0),
            "mug": ("mug", 903, 20.0, 15.0), "car": ("car", 904, 30.0, 15.0)}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, (family, idx, az, el) in EXAMPLES.items():
        shape = make_shape(SPLIT_SEED_BASE["test"] + idx, family)
        caster = Caster(shape, normalizer(shape.mesh))
        img = render_input(caster, view_rotation(az, el), np.random.default_rng(idx), res=256)
        Image.fromarray(img).save(OUT / f"{name}.png")
        print(f"wrote {OUT / name}.png")
    # the same car on a plain background, without alpha: exercises the border-estimation path
    car = np.asarray(Image.open(OUT / "car.png"))
    a = car[..., 3:4].astype(np.float32) / 255
    rgb = car[..., :3] * a + np.array([235, 235, 228]) * (1 - a)
    Image.fromarray(rgb.round().astype(np.uint8)).save(OUT / "car_on_white.jpg", quality=92)
    print(f"wrote {OUT / 'car_on_white.jpg'}")


if __name__ == "__main__":
    main()
