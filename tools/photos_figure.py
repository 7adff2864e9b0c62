"""README figure for photos: input | cut-out used | a novel view of the reconstruction.

    .venv/bin/python tools/photos_figure.py PHOTO [PHOTO...] --out docs/img/photos.png

Runs only the project's own tools: a backend (``image2points serve`` on a free loopback port) and
the headless batch entry (``python -m image2points.addon.batch``, which saves ``<name>_mask.png`` and renders
views with Cycles); then puts the three pictures side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
H = 240


def serve(tmp: str) -> tuple[subprocess.Popen, str]:
    ready = os.path.join(tmp, "port")
    proc = subprocess.Popen([sys.executable, "-m", "image2points.backend.cli", "serve", "--port", "0", "--threads", "1",
                             "--ready-file", ready], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise SystemExit("the backend did not start")
        time.sleep(0.1)
    return proc, f"tcp://127.0.0.1:{Path(ready).read_text().strip()}"


def fit(im: Image.Image) -> np.ndarray:
    im = im.convert("RGB")
    return np.asarray(im.resize((max(1, round(im.width * H / im.height)), H), Image.Resampling.LANCZOS))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+")
    p.add_argument("--out", default="docs/img/photos.png")
    p.add_argument("--view", type=int, default=1, help="which of the rendered ring views to show")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="i2p-fig-")
    proc, endpoint = serve(tmp)
    rows = []
    try:
        for photo in a.photos:
            name = Path(photo).stem
            subprocess.run([sys.executable, "-m", "image2points.addon.batch", "--image", photo, "--out",
                            os.path.join(tmp, name + ".blend"), "--endpoint", endpoint, "--views", "4",
                            "--elevation", "25", "--resolution", "320", "--samples", "16"],
                           cwd=ROOT, check=True)
            src = Image.open(photo)
            mask = Image.open(os.path.join(tmp, f"{name}_mask.png")).convert("L")
            cut = np.asarray(src.convert("RGB").resize(mask.size)).astype(np.float32)
            m = np.asarray(mask, np.float32)[..., None] / 255
            cut = (cut * (0.2 + 0.8 * m)).astype(np.uint8)
            view = Image.open(os.path.join(tmp, f"{name}_view_{a.view:02d}.png"))
            gap = np.full((H, 6, 3), 255, np.uint8)
            rows.append(np.concatenate([fit(src), gap, fit(Image.fromarray(cut)), gap, fit(view)], 1))
    finally:
        proc.terminate()
        proc.wait(20)
    w = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 6), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Image.fromarray(sheet).save(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
