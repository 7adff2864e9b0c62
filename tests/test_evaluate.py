"""The evaluation's arithmetic: the metrics on known clouds, and the bootstrap intervals of the
gains (paired, resampling whole objects)."""

from __future__ import annotations

import numpy as np

from image2points.backend.evaluate import gain_ci, metrics, subsample, verdict


def _cloud(n: int = 3000, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_metrics_on_known_clouds():
    gt = _cloud()
    same = metrics(gt, gt)
    assert same["chamfer"] == 0 and same["f1"] == same["f2"] == 1.0
    near, far = metrics(gt + [0.1, 0, 0], gt), metrics(gt + [0.3, 0, 0], gt)
    assert 0 < near["chamfer"] < far["chamfer"] < 0.3  # a shifted sphere is closer than the shift
    assert far["f2"] < near["f2"] < 1 and far["f2"] < 0.3  # 0.3 is 4x the F@2% radius (~0.07)
    assert metrics(np.zeros((0, 3)), gt)["f2"] == 0.0


def test_subsample_keeps_the_density_and_spreads_the_points():
    """The thinning every cloud goes through before it is scored: a random choice leaves clumps and
    gaps that cost a dense cloud GT->cloud distance; the stratified one spreads the kept points
    (they sit farther from each other) and keeps where the cloud is dense."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(3)
    dense = rng.random((40_000, 3)) * [1.0, 1.0, 0.02]  # a thin plate, 80% of it on the left half
    dense[:32_000, 0] *= 0.5
    dense[32_000:, 0] = 0.5 + 0.5 * dense[32_000:, 0]
    kept = subsample(dense)
    assert kept.shape == (4096, 3) and np.array_equal(kept, subsample(dense))  # deterministic
    assert len(np.unique(kept, axis=0)) == 4096  # no point twice
    assert abs((kept[:, 0] < 0.5).mean() - 0.8) < 0.02  # the cloud's own density
    rand = dense[rng.choice(len(dense), 4096, replace=False)]
    gap = [cKDTree(k).query(k, k=2)[0][:, 1].mean() for k in (kept, rand)]
    assert gap[0] > 1.05 * gap[1]  # spread out, not clumped (1.11-1.14 over five seeds)
    gt = rng.random((4096, 3)) * [1.0, 1.0, 0.02]
    gt[:, 0] = np.where(gt[:, 0] < 0.8, gt[:, 0] / 1.6, 0.5 + (gt[:, 0] - 0.8) * 2.5)
    assert metrics(kept, gt)["g2p"] < metrics(rand, gt)["g2p"]
    small = dense[:100]
    assert subsample(small) is small  # fewer than n: all of them


def _report(model: dict, base: dict, groups: list[str]) -> dict:
    def entry(rows: dict) -> dict:
        return {"mean": {k: float(np.mean(v)) for k, v in rows.items()}, "per_sample": rows}

    split = {"groups": groups, "model": entry(model)}
    split.update({b: entry(base) for b in ("mean_shape", "nn_retrieval", "silhouette_slab")})
    return {"third_party": split}


def test_gain_intervals_resample_objects_and_are_paired():
    rng = np.random.default_rng(0)
    groups = [f"obj{i // 3}" for i in range(30)]  # 10 objects x 3 views
    obj = np.repeat(rng.uniform(0.05, 0.15, 10), 3)  # objects differ a lot; views of one agree
    base = {"chamfer": list(obj), "f2": list(1 - 3 * obj)}
    better = {"chamfer": list(0.7 * obj), "f2": list(1.3 * (1 - 3 * obj))}
    v = verdict(_report(better, base, groups))["third_party"]["vs"]["silhouette_slab"]
    # 30% better on every sample: the paired interval is tight around +30% despite the spread
    assert abs(v["chamfer_gain"] - 0.3) < 1e-9 and abs(v["chamfer_gain_ci95"][0] - 0.3) < 1e-6
    assert abs(v["f2_gain_ci95"][1] - 0.3) < 1e-6

    noisy = {"chamfer": list(obj * rng.uniform(0.5, 1.3, 10).repeat(3)), "f2": base["f2"]}
    by_object = gain_ci(noisy, base, groups)["chamfer_gain_ci95"]
    by_view = gain_ci(noisy, base, [str(i) for i in range(30)])["chamfer_gain_ci95"]
    # three views of one object are not three independent samples: the interval is wider
    assert by_object[1] - by_object[0] > 1.3 * (by_view[1] - by_view[0])
    assert gain_ci(base, base, groups) == {"chamfer_gain_ci95": [0.0, 0.0], "f2_gain_ci95": [0.0, 0.0]}


def test_verdict_without_per_sample_rows_has_no_intervals():
    rep = _report({"chamfer": [0.1], "f2": [0.5]}, {"chamfer": [0.2], "f2": [0.3]}, ["a"])
    del rep["third_party"]["groups"]
    v = verdict(rep)["third_party"]
    assert v["beats_all_by_20pct"] and "chamfer_gain_ci95" not in v["vs"]["mean_shape"]


def test_a_model_scores_inputs_made_at_another_size_as_their_area_resized_copies():
    import torch

    from image2points.backend.evaluate import model_predictor
    from image2points.backend.model.generator import GeneratorConfig, StructureGenerator

    torch.manual_seed(0)
    net = StructureGenerator(GeneratorConfig(latent=32, width=64)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.3)
    big = np.zeros((1, 4, 128, 128), np.uint8)
    big[0, :, 30:100, 40:90] = 200
    small = np.round(big.reshape(1, 4, 64, 2, 64, 2).mean((3, 5))).astype(np.uint8)
    predict = model_predictor(net)
    a, b = predict(big)[0], predict(small)[0]
    assert len(a) > 0 and a.shape == b.shape and np.allclose(a, b, atol=1e-5)
