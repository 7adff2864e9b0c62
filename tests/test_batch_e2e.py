"""The headless batch entry end to end: real backend process, real bpy, real model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, example_image
from PIL import Image

from image2points.addon.core.plyio import read_ply

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

REOPEN = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
objs = [o for o in bpy.data.objects if "i2p_point_count" in o]
o = objs[0]
attr = o.data.color_attributes.get("Col")
print(json.dumps({"n_objects": len(objs), "name": o.name, "verts": len(o.data.vertices),
                  "count": o["i2p_point_count"], "has_colour": attr is not None,
                  "modifier": o.modifiers[0].type, "job": o.get("i2p_job", ""),
                  "sha": o.get("i2p_source_sha256", ""),
                  "cameras": sum(1 for c in bpy.data.objects if c.type == "CAMERA")}))
"""


def run_batch(args, cwd=ROOT, as_file=False):
    entry = [str(ROOT / "addon" / "batch.py"), "--"] if as_file else ["-m", "image2points.addon.batch"]
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_batch_writes_blend_ply_and_views(backend, tmp_path):
    image = example_image()
    out = tmp_path / "chair.blend"
    res = run_batch(["--image", str(image), "--out", str(out), "--endpoint", backend.endpoint,
                     "--views", "2", "--resolution", "96", "--samples", "4"])
    assert res.returncode == 0, res.stdout + res.stderr
    reopened = subprocess.run([sys.executable, "-c", REOPEN, str(out)], capture_output=True,
                              text=True, timeout=300)
    info = json.loads(reopened.stdout.strip().splitlines()[-1])
    assert info["n_objects"] == 1
    assert info["verts"] == info["count"] > 500
    assert info["has_colour"] and info["modifier"] == "NODES"
    assert len(info["job"]) == 32 and len(info["sha"]) == 64
    assert info["cameras"] == 2
    assert f"imported {info['verts']} points" in res.stdout

    xyz, rgb = read_ply(tmp_path / "chair.ply")
    assert len(xyz) == info["verts"]
    assert np.isfinite(xyz).all() and rgb.std() > 0  # coloured, not one flat colour

    for i in range(2):
        img = np.asarray(Image.open(tmp_path / f"chair_view_{i:02d}.png").convert("RGB")).astype(int)
        background = img[0, 0]
        differs = np.abs(img - background).sum(-1) > 30
        assert 0.02 < differs.mean() < 0.95, "the render should show the points, not an empty frame"


def test_batch_as_a_blender_script_file(backend, tmp_path):
    """`blender -b -P addon/batch.py -- ...` runs the file outside its package; same result."""
    out = tmp_path / "x.blend"
    res = run_batch(["--image", str(example_image()), "--out", str(out), "--endpoint",
                     backend.endpoint, "--views", "0"], cwd=tmp_path, as_file=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.exists() and (tmp_path / "x.ply").exists()


def test_batch_reports_unreachable_backend(tmp_path):
    res = run_batch(["--image", str(example_image()), "--out", str(tmp_path / "y.blend"),
                     "--endpoint", "tcp://127.0.0.1:9", "--connect-timeout", "0.5"])
    assert res.returncode == 1
    assert "UNREACHABLE" in res.stderr and "not reachable" in res.stderr
    assert not (tmp_path / "y.blend").exists()


def test_batch_refuses_missing_image(tmp_path):
    res = run_batch(["--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "z.blend")])
    assert res.returncode == 2 and "not found" in res.stderr
