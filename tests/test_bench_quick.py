"""`image2points bench --quick`: every benchmark executes and prints its same-run ratio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.bpy]


def test_every_benchmark_runs_quick(tmp_path):
    """Through the console script, from a folder that holds no source: what a user runs."""
    exe = Path(sys.executable).with_name("image2points")
    out = subprocess.run([str(exe), "bench", "--quick"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("import", "wire", "roundtrip", "model", "serve", "nerf", "mesh"):
        assert f"### {name} (quick)" in out.stdout
        assert f"!! {name} failed" not in out.stdout
    for ratio_line in ("speedup", "ratio", "end-to-end / forward", "micro-batching speed-up"):
        assert ratio_line in out.stdout, ratio_line
