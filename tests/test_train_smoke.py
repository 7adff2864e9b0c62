"""make-data -> train -> eval on a tiny set: the whole pipeline runs and the loss falls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def run(*args):
    out = subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_pipeline_smoke(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "run"
    run("make-data", "--data", str(data), "--smoke")
    run("train", "--data", str(data), "--out", str(runs), "--smoke")
    result = json.loads((runs / "result.json").read_text())
    assert result["steps"] > 20
    assert result["last_loss"] < 0.8 * result["first_loss"], result
    assert (runs / "loss.png").stat().st_size > 1000
    out = run("eval", "--checkpoint", str(runs / "model.pt"), "--data", str(data), "--out",
              str(tmp_path / "eval"), "--no-third-party")
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    for name in ("model", "mean_shape", "nn_retrieval", "silhouette_slab"):
        m = report["test"][name]["mean"]
        assert 0 <= m["f2"] <= 1 and m["chamfer"] > 0
    assert "nn_retrieval" in out
