"""Static checks that CI runs with the tests: ruff on everything, mypy (fake-bpy-module) on addon/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ruff_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "addon", "backend", "bench", "tests", "tools"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_mypy_addon_clean():
    out = subprocess.run([str(BIN / "mypy"), "addon"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_no_pickle_and_safe_torch_load():
    """No pickle on any path data can take; every torch.load is weights_only."""
    for path in list((ROOT / "addon").rglob("*.py")) + list((ROOT / "backend").rglob("*.py")):
        text = path.read_text()
        assert "import pickle" not in text and "recv_pyobj" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_readme_eval_table_matches_shipped_report():
    """The README's model-quality numbers are generated from the shipped eval report."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from update_readme import render

    readme = (ROOT / "README.md").read_text()
    report = json.loads((ROOT / "backend" / "weights" / "eval_report.json").read_text())
    assert render(readme, report) == readme, "run: python tools/update_readme.py"
