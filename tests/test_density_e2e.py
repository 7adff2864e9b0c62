"""``density`` through the protocol, the CLI and batch; batch's contact sheet and per-view lines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, example_image
from images import disc_rgba, png_bytes
from PIL import Image

from image2points.addon.core.client import BackendError, Client, points_from_result
from image2points.addon.core.plyio import read_ply


@pytest.mark.parametrize("density", [10_000, 60_000])
def test_reconstruct_op_honours_density(backend, density):
    with Client(backend.endpoint) as c:
        job = c.submit("reconstruct", {"density": density}, {"image": png_bytes(disc_rgba())},
                       {"image": "image/png"})
        res = c.wait(job, timeout=120)
    xyz, rgb = points_from_result(res)
    assert abs(len(xyz) - density) <= 0.05 * density
    assert 0 < res.meta["visible_points"] < len(xyz)


def test_max_points_still_caps_the_density(backend):
    with Client(backend.endpoint) as c:
        job = c.submit("reconstruct", {"density": 50_000, "max_points": 12_000},
                       {"image": png_bytes(disc_rgba())}, {"image": "image/png"})
        xyz, _ = points_from_result(c.wait(job, timeout=120))
    assert len(xyz) == 12_000


@pytest.mark.parametrize("value,code", [(5, "BAD_INPUT"), ("lots", "BAD_INPUT"), (True, "BAD_INPUT"),
                                        (2_000_000, "TOO_LARGE")])
def test_bad_density_is_refused(backend, value, code):
    with Client(backend.endpoint) as c:
        job = c.submit("reconstruct", {"density": value}, {"image": png_bytes(disc_rgba())},
                       {"image": "image/png"})
        with pytest.raises(BackendError) as err:
            c.wait(job, timeout=60)
    assert err.value.code == code and "density" in err.value.message


def test_cli_reconstruct_density(tmp_path):
    exe = [str(ROOT / ".venv" / "bin" / "image2points")]
    out = tmp_path / "c.ply"
    res = subprocess.run([*exe, "reconstruct", str(example_image()), "-o", str(out), "--density", "100000"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    xyz, rgb = read_ply(out)
    assert abs(len(xyz) - 100_000) <= 5_000
    # the visible points carry the picture's own bytes
    img = np.asarray(Image.open(example_image()).convert("RGBA"))
    pix = {tuple(p) for p in img[img[..., 3] > 127][:, :3]}
    assert np.mean([tuple(c) in pix for c in rgb]) > 0.3
    bad = subprocess.run([*exe, "reconstruct", str(example_image()), "-o", str(out), "--density", "5"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "density" in bad.stderr


@pytest.mark.bpy
@pytest.mark.slow
def test_batch_density_contact_sheet_and_one_line_per_view(backend, tmp_path):
    out = tmp_path / "chair.blend"
    res = subprocess.run([sys.executable, "-m", "image2points.addon.batch", "--image", str(example_image()),
                          "--out", str(out), "--endpoint", backend.endpoint, "--views", "2",
                          "--resolution", "64", "--samples", "2", "--density", "15000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    xyz, _ = read_ply(tmp_path / "chair.ply")
    assert abs(len(xyz) - 15_000) <= 750
    lines = res.stdout.splitlines()
    assert sum(1 for ln in lines if "view 1/2" in ln) == 1 and sum(1 for ln in lines if "view 2/2" in ln) == 1
    assert not any(ln.startswith("Fra:") or "Sample " in ln for ln in lines), res.stdout
    sheet = np.asarray(Image.open(tmp_path / "chair_contact_sheet.png"))
    assert sheet.shape[:2] == (64, 4 * 64)  # input | cut-out | 2 views
    assert parse_default_resolution() == 512


def parse_default_resolution() -> int:
    from image2points.addon.batch import parse_args

    return parse_args(["--image", "x.png", "--out", "x.blend"]).resolution
