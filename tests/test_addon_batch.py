"""Headless batch over many images: per-file and collections layouts, per-image progress, exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from images import disc_rgba, png_bytes

pytestmark = pytest.mark.bpy

REOPEN = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
print(json.dumps({
    "collections": {c.name: sorted(o.name for o in c.objects if "i2p_point_count" in o)
                    for c in bpy.data.collections},
    "objects": {o.name: [list(o.location), o.get("i2p_source_image", ""), o.get("i2p_job", "")]
                for o in bpy.data.objects if "i2p_point_count" in o},
    "cameras": sum(1 for o in bpy.data.objects if o.type == "CAMERA")}))
"""


def batch(*args: str):
    return subprocess.run([sys.executable, "-m", "image2points.addon.batch", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def reopen(path) -> dict:
    res = subprocess.run([sys.executable, "-c", REOPEN, str(path)], capture_output=True, text=True,
                         timeout=300)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_folder_per_file_reports_each_image_and_fails_on_a_bad_one(backend, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "red.png").write_bytes(png_bytes(disc_rgba(72)))
    (src / "blue.png").write_bytes(png_bytes(disc_rgba(72, (30, 60, 220))))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    from PIL import Image

    Image.fromarray(disc_rgba(72, (40, 200, 60))).save(src / "green.tif")  # decoded by Blender
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    res = batch("--images", str(src), "--out-dir", str(out), "--endpoint", backend.endpoint,
                "--views", "0", "--max-points", "3000")
    assert res.returncode == 1, res.stdout + res.stderr  # one image failed
    assert "[1/4] blue.png: ok" in res.stdout and "[4/4] red.png: ok" in res.stdout
    assert "[3/4] green.tif: ok" in res.stdout
    assert "[2/4] broken.png: FAILED [BAD_INPUT]" in res.stdout
    assert "3/4 images succeeded" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["blue.blend", "blue.ply", "blue_mask.png", "green.blend",
                                                     "green.ply", "green_mask.png", "red.blend", "red.ply",
                                                     "red_mask.png"]
    info = reopen(out / "red.blend")
    assert list(info["objects"]) == ["red"] and info["objects"]["red"][1] == "red.png"


def test_collections_layout_one_blend_side_by_side(backend, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(png_bytes(disc_rgba(64)))
    b.write_bytes(png_bytes(disc_rgba(64, (20, 200, 60))))
    out = tmp_path / "all.blend"
    res = batch("--image", str(a), "--image", str(b), "--layout", "collections", "--out", str(out),
                "--endpoint", backend.endpoint, "--views", "1", "--resolution", "32",
                "--samples", "1", "--max-points", "3000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[1/2] a.png: ok" in res.stdout and "[2/2] b.png: ok" in res.stdout
    info = reopen(out)
    assert info["collections"]["a"] == ["a"] and info["collections"]["b"] == ["b"]
    (xa, _, _), (xb, _, _) = info["objects"]["a"][0], info["objects"]["b"][0]
    assert xb - xa == pytest.approx(3.0)  # 1.5 x the 2 m size apart
    assert info["objects"]["a"][2] != info["objects"]["b"][2]  # one job each
    assert info["cameras"] == 2
    assert (tmp_path / "a.ply").exists() and (tmp_path / "b_view_00.png").exists()


@pytest.mark.parametrize("args", [
    [],
    ["--image", "{img}", "--image", "{img}", "--layout", "per-file"],
    ["--image", "{img}", "--image", "{img}", "--out", "{tmp}/x.blend", "--ply", "{tmp}/x.ply"],
    ["--images", "{tmp}/nope", "--out-dir", "{tmp}"],
])
def test_bad_arguments_exit_2(tmp_path, args):
    img = tmp_path / "i.png"
    img.write_bytes(png_bytes(disc_rgba(16)))
    res = batch(*[a.format(img=img, tmp=tmp_path) for a in args])
    assert res.returncode == 2 and "error:" in res.stderr


def test_photos_warn_save_their_masks_and_take_a_given_mask(backend, tmp_path):
    import numpy as np
    from images import encoded, inseparable_photo, photo_like
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    (src / "photo.jpg").write_bytes(encoded(photo_like(240, 320), "JPEG", quality=90))
    (src / "closeup.jpg").write_bytes(encoded(inseparable_photo(), "JPEG", quality=90))
    out = tmp_path / "out"
    res = batch("--images", str(src), "--out-dir", str(out), "--endpoint", backend.endpoint,
                "--views", "0", "--max-points", "2000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[1/2] closeup.jpg: warning MASK_SUSPECT: the object could not be separated" in res.stdout
    assert "photo.jpg: warning" not in res.stdout
    auto = np.asarray(Image.open(out / "photo_mask.png").convert("L"))
    assert auto.shape == (240, 320) and 0.1 < (auto > 127).mean() < 0.4
    info = json.loads(subprocess.run([sys.executable, "-c", REOPEN.replace(
        'o.get("i2p_job", "")', 'o.get("i2p_warnings", "")'), str(out / "closeup.blend")],
        capture_output=True, text=True, timeout=300).stdout.strip().splitlines()[-1])
    assert "MASK_SUSPECT" in info["objects"]["closeup"][2]  # on the object's provenance

    m = np.zeros((240, 320), np.uint8)
    m[60:180, 100:220] = 255
    (tmp_path / "m.png").write_bytes(encoded(m))
    res = batch("--image", str(src / "closeup.jpg"), "--mask", str(tmp_path / "m.png"), "--strict",
                "--out", str(tmp_path / "given" / "c.blend"), "--endpoint", backend.endpoint, "--views", "0",
                "--max-points", "2000")
    assert res.returncode == 0 and "warning" not in res.stdout, res.stdout + res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "given" / "closeup_mask.png").convert("L")), m)
