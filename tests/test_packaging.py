"""Installed, the project lives under its own name: no top-level `backend`, `addon` or `bench`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_a_plain_install_puts_only_image2points_into_site_packages(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, PIP_NO_INDEX="1")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--target", str(target), str(ROOT)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    tops = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert tops - {"bin"} == {"image2points"}, tops
    pkg = target / "image2points"
    assert (pkg / "backend" / "cli.py").is_file() and (pkg / "addon" / "core" / "client.py").is_file()
    assert list((pkg / "backend" / "weights").glob("*.pt")), "the shipped checkpoint is installed"
    assert not (pkg / "tests").exists() and not (pkg / "tools").exists()
    script = (target / "bin" / "image2points").read_text()
    assert "image2points.backend.cli" in script
    # from that copy, the project's modules import under its name and `backend` is nobody's
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import image2points.backend.cli as c; "
            "print(c.__file__)\ntry:\n import backend\nexcept ModuleNotFoundError:\n print('no backend')")
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    first, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert first.startswith(str(target)) and last == "no backend", out.stdout
