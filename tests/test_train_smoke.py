"""make-data -> train -> eval on a tiny set: the whole pipeline runs and the loss falls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def run(*args, rc=0):
    out = subprocess.run([sys.executable, "-m", "image2points.backend.cli", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == rc, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


def test_pipeline_smoke(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "run"
    out = run("pipeline", "--data", str(data), "--out", str(runs), "--smoke")
    result = json.loads((runs / "result.json").read_text())
    assert result["steps"] > 20
    assert result["last_loss"] < 0.8 * result["first_loss"], result
    assert (runs / "loss.png").stat().st_size > 1000
    report = json.loads((runs / "eval_report.json").read_text())
    for name in ("model", "sphere", "mean_shape", "nn_retrieval", "silhouette_slab", "inflation"):
        m = report["test"][name]["mean"]
        assert 0 <= m["f2"] <= 1 and m["chamfer"] > 0
    assert "nn_retrieval" in out
    hidden = report["test"]["hidden_colour"]  # the test split keeps its renders: the lifted cloud's
    assert 0 <= hidden["picture"] < 255 and 0 <= hidden["model"] < 255
    summary = json.loads((runs / "pipeline.json").read_text())
    assert set(summary["seconds"]) == {"make_data", "train", "eval"}
    assert summary["shards_present_before"] == 0 and summary["smoke"] is True
    assert 0 < summary["total_minutes"] < 10
    assert summary["verdict"]["test"]["vs"].keys() == {"sphere", "mean_shape", "nn_retrieval",
                                                       "silhouette_slab", "inflation"}

    # --init: a new run starts from those weights, so its first losses are the old run's last
    warm = tmp_path / "warm"
    run("train", "--data", str(data), "--out", str(warm), "--smoke", "--minutes", "0.15",
        "--init", str(runs / "model.pt"))
    again = json.loads((warm / "result.json").read_text())
    assert again["first_loss"] < 0.8 * result["first_loss"], (again, result)

    # the model follows its data's fixed views; weights for other views are refused, clearly
    card = json.loads((runs / "model.card.json").read_text())
    assert (card["config"]["layout"], card["config"]["views"]) == ("axis", 6)
    corners = tmp_path / "corners"
    run("make-data", "--data", str(corners), "--smoke", "--train", "4", "--layout", "corners")
    err = run("train", "--data", str(corners), "--out", str(tmp_path / "x"), "--smoke",
              "--init", str(runs / "model.pt"), rc=2)
    assert "holds fixed views 'corners' but the model draws 'axis'" in err
    assert "Traceback" not in err
