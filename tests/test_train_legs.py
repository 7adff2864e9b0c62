"""Training in legs: a run cut in two continues exactly (weights, optimiser, data order)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from image2points.backend import train as T
from image2points.backend.data import make
from image2points.backend.model.generator import GeneratorConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("legs") / "data"
    make.make_all(root, {"train": 6, "val": 1, "test": 1}, workers=1)
    return root


def _cfg(tiny, out, steps, seed=0, **kw):
    # the step budget binds long before the time budget, so the schedule (and stage 2 in the last
    # 30% of it) is a function of the step alone
    return T.TrainConfig(data=str(tiny), out=str(out), minutes=10_000, max_steps=steps, batch=4,
                         threads=1, seed=seed, ckpt_every_s=1e9, gen="prior=inflate", **kw)


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "state.pt", weights_only=True)["model"]


def _max_diff(a, b) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_a_run_cut_into_two_legs_continues_exactly(tiny, tmp_path):
    T.train(_cfg(tiny, tmp_path / "one", 6), resume=False)
    T.train(_cfg(tiny, tmp_path / "two", 6, leg_steps=3), resume=False)
    res = T.train(_cfg(tiny, tmp_path / "two", 6), resume=True)
    T.train(_cfg(tiny, tmp_path / "other", 6, seed=1), resume=False)
    one, two, other = (_weights(tmp_path / n) for n in ("one", "two", "other"))
    assert _max_diff(one, two) < 1e-5
    # other batches (another data order) move the weights far more than that tolerance
    assert _max_diff(one, other) > 1e-3
    assert [(g["start_step"], g["end_step"]) for g in res["legs"]] == [(0, 3), (3, 6)]
    assert res["finished"]


def test_leg_minutes_stops_early_and_resume_takes_the_saved_config(tiny, tmp_path, capsys):
    run = tmp_path / "legged"
    res = T.train(_cfg(tiny, run, 1000, leg_minutes=0.002), resume=False)
    assert not res["finished"] and 1 <= res["steps"] < 1000
    assert (run / "model.pt").exists()  # every leg leaves a usable checkpoint
    card = json.loads((run / "model.card.json").read_text())
    assert card["config"]["prior"] == "inflate"

    parser = argparse.ArgumentParser()
    T.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--resume", str(run), "--leg-minutes", "0.002", "--threads", "1"])
    assert T.run(args) == 0
    out = json.loads((run / "result.json").read_text())
    assert len(out["legs"]) == 2 and out["legs"][1]["start_step"] == res["steps"]
    assert out["steps"] > res["steps"]

    missing = parser.parse_args(["train", "--resume", str(tmp_path / "nothing")])
    assert T.run(missing) == 2
    assert "no saved state" in capsys.readouterr().err



def test_pipeline_trains_one_leg_per_call_and_evaluates_after_the_last(tiny, tmp_path):
    from image2points.backend.pipeline import run_pipeline

    out = tmp_path / "pipe"
    calls = []
    for _ in range(12):  # a 0.05-minute budget in legs of 0.015 minutes: about four calls
        s = run_pipeline(str(tiny), str(out), minutes=0.05, smoke=True, fresh=False, workers=1,
                         leg_minutes=0.015)
        calls.append(s)
        if s["verdict"] is not None:
            break
    assert len(calls) >= 2 and calls[-1]["verdict"] is not None
    assert all(c["verdict"] is None for c in calls[:-1])  # no eval before the budget is spent
    legs = calls[-1]["train_result"]["legs"]
    assert len(legs) == len(calls) and legs[-1]["end_minutes"] >= 0.05
    # the pipeline's train time is the sum over the legs, not the last leg's
    assert calls[-1]["seconds"]["train"] > calls[0]["seconds"]["train"]


def test_a_128px_data_set_trains_a_128px_model_through_stage_2(tmp_path):
    root = tmp_path / "d128"
    make.make_all(root, {"train": 2, "val": 1, "test": 1}, workers=1, res=128)
    cfg = T.TrainConfig(data=str(root), out=str(tmp_path / "r128"), minutes=10_000, max_steps=4,
                        batch=2, threads=1, ckpt_every_s=1e9, gen="prior=inflate")
    res = T.train(cfg, resume=False)  # the last 30% of the steps are stage 2 (novel views at 64)
    hist = np.loadtxt(tmp_path / "r128" / "history.csv", delimiter=",")
    assert res["steps"] == 4 and hist[-1, 6] == 1.0 and np.isfinite(hist[:, 2:6]).all()
    card = json.loads((tmp_path / "r128" / "model.card.json").read_text())
    assert (card["config"]["in_res"], card["config"]["out_res"]) == (128, 128)
    # and weights for 64 px maps are refused on it, clearly
    with pytest.raises(ValueError, match="128px inputs and 128px maps"):
        T.train(T.TrainConfig(data=str(root), out=str(tmp_path / "x"), max_steps=1, batch=2,
                              threads=1, gen="prior=inflate"), gen_cfg=GeneratorConfig(prior="inflate"),
                resume=False)
