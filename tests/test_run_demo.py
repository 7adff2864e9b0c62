"""`./run demo` that fails after its backend started must not leave that backend running.

The script runs from a scratch folder of symlinks (run, .venv, the packages), so its out/ folder
is not the checkout's; the backend's PID is the one the script prints.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def _venv_is_current() -> bool:
    """`./run` reinstalls the venv when pyproject.toml or run changed; don't do that from here."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "run").read_bytes())
    stamp = ROOT / ".venv" / ".image2points-stamp"
    return stamp.exists() and stamp.read_text().strip() == want.hexdigest()[:16]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    if not _venv_is_current():
        pytest.skip("the .venv stamp is stale: run this through ./run test")
    for name in ("run", "pyproject.toml", ".venv", "addon", "backend", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_failing_after_the_backend_started_leaves_no_backend(scratch: Path):
    (scratch / "bad.png").write_text("not an image")
    out = subprocess.run(["./run", "demo", "bad.png"], cwd=scratch, capture_output=True,
                         text=True, timeout=300)
    started = re.search(r"started the backend \(pid (\d+)\)", out.stdout)
    assert started, out.stdout + out.stderr
    pid = int(started.group(1))
    try:
        assert out.returncode != 0, out.stdout
        assert "BAD_INPUT" in out.stdout + out.stderr  # it failed where we meant it to
        assert not _alive(pid), f"the demo's backend (pid {pid}) outlived it"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert "unbound variable" not in out.stderr


def test_demo_with_a_missing_image_says_so_before_starting_anything(scratch: Path):
    out = subprocess.run(["./run", "demo", "/nonexistent.png"], cwd=scratch, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "no such image: /nonexistent.png" in out.stderr
    assert "started the backend" not in out.stdout
