"""End-to-end NeRF on a tiny scene rendered by Blender: fit beats trivial baselines on held-out
views, save/load is exact, points/PLY, CLI and server ops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.model.nerf_data import load_transforms
from backend.model.nerf_train import (
    FitConfig,
    evaluate,
    fit,
    load_model,
    model_from_bytes,
    model_to_bytes,
    psnr,
    render_image,
    save_model,
)

pytestmark = [pytest.mark.bpy, pytest.mark.slow]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    pytest.importorskip("bpy")
    from backend.data.nerf_scene import make_scene

    return make_scene("blocks", tmp_path_factory.mktemp("nerf") / "blocks32", width=32, n_train=24, n_test=4,
                      samples=16, workers=2, log=lambda s: None)


@pytest.fixture(scope="module")
def fitted(scene: Path):
    torch.set_num_threads(1)
    train = load_transforms(scene, "train")
    calls: list[tuple[float, str, dict, object]] = []
    model = fit(train, FitConfig(field="fast", steps=100, batch_rays=2048, preview_every_s=0.0, seed=0),
                progress=lambda f, s, m, p: calls.append((f, s, m, p)))
    return model, calls


def test_scene_files_follow_the_convention(scene: Path) -> None:
    train = load_transforms(scene, "train")
    test = load_transforms(scene, "test")
    assert train.images.shape == (24, 32, 32, 4) and test.images.shape == (4, 32, 32, 4)
    assert train.has_alpha and train.aabb is not None
    # held-out cameras are on another orbit: no test camera coincides with a training camera
    d = np.linalg.norm(train.c2w[:, None, :3, 3] - test.c2w[None, :, :3, 3], axis=-1)
    assert d.min() > 0.1


def test_tiny_fit_beats_trivial_baselines(scene: Path, fitted) -> None:
    model, calls = fitted
    train, test = load_transforms(scene, "train"), load_transforms(scene, "test")
    gt = test.rgb_on()
    white = np.mean([psnr(np.ones_like(g), g) for g in gt])
    mean_img = train.rgb_on().mean(0)
    mean_b = np.mean([psnr(mean_img, g) for g in gt])
    got = evaluate(model.field, test)["psnr"]
    assert got > max(white, mean_b) + 6.0, (got, white, mean_b)
    # progress: fractions rise to 1, a preview image arrived, ends with "done"
    fr = [c[0] for c in calls]
    assert fr == sorted(fr) and calls[-1][1] == "done" and fr[-1] == 1.0
    previews = [c[3] for c in calls if c[3] is not None]
    assert previews and previews[0].dtype == np.uint8 and previews[0].shape[2] == 3
    assert model.meta["steps"] == 100 and model.meta["stopped"] == "budget"


def test_save_load_round_trip_renders_identically(scene: Path, fitted, tmp_path: Path) -> None:
    model, _ = fitted
    test = load_transforms(scene, "test")
    path = save_model(model, tmp_path / "m.pt")
    # the file is a plain tensor/str dict: loadable with weights_only=True (no pickle of objects)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "image2points.nerf"
    again = load_model(path)
    a = render_image(model.field, test.c2w[0], test.intrinsics)
    b = render_image(again.field, test.c2w[0], test.intrinsics)
    assert np.array_equal(a["rgb"], b["rgb"]) and np.array_equal(a["depth"], b["depth"])
    half = model_from_bytes(model_to_bytes(model, half=True))
    c = render_image(half.field, test.c2w[0], test.intrinsics)
    assert psnr(c["rgb"], a["rgb"]) > 40


def test_cancel_and_early_stop(scene: Path) -> None:
    train = load_transforms(scene, "train")
    n = {"k": 0}

    def stop() -> bool:
        n["k"] += 1
        return n["k"] > 5

    m = fit(train, FitConfig(field="fast", steps=1000, batch_rays=1024), should_stop=stop)
    assert m.meta["stopped"] == "cancelled" and m.meta["steps"] == 5
    m = fit(train, FitConfig(field="fast", steps=1000, batch_rays=1024, target_psnr=12.0))
    assert m.meta["stopped"] == "target" and m.meta["steps"] < 1000


def test_other_fields_train_through_the_same_interface(scene: Path) -> None:
    train, test = load_transforms(scene, "train"), load_transforms(scene, "test")
    for name in ("fast-sh", "mlp", "mlp-seed"):
        m = fit(train, FitConfig(field=name, steps=20, batch_rays=256))
        assert np.isfinite(evaluate(m.field, test, max_images=1)["psnr"])
        again = model_from_bytes(model_to_bytes(m))
        assert np.array_equal(render_image(m.field, test.c2w[0], test.intrinsics)["rgb"],
                              render_image(again.field, test.c2w[0], test.intrinsics)["rgb"])


def test_points_and_ply(fitted, scene: Path, tmp_path: Path) -> None:
    from addon.plyio import write_ply
    from backend.model.nerf_points import extract_points

    model, _ = fitted
    xyz, rgb = extract_points(model, max_points=5000)
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and xyz.shape == rgb.shape and 500 < len(xyz) <= 5000
    box = load_transforms(scene, "train").aabb
    assert np.all(xyz >= box[0] - 0.05) and np.all(xyz <= box[1] + 0.05)
    # the ground plate is at z = 0: many points near it (within ~2 voxels of this coarse 40^3 fit),
    # nothing far below it
    assert np.mean(np.abs(xyz[:, 2]) < 0.15) > 0.2 and xyz[:, 2].min() > -0.15
    path = tmp_path / "p.ply"
    write_ply(path, xyz, rgb)
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {len(xyz)}" in lines
    props = [ln for ln in lines if ln.startswith("property")]
    assert props == ["property float x", "property float y", "property float z",
                     "property uchar red", "property uchar green", "property uchar blue"]
    rec = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert len(rec) == len(xyz) and np.array_equal(rec["x"], xyz[:, 0]) and np.array_equal(rec["b"], rgb[:, 2])


def test_cli_fit_render_points(scene: Path, tmp_path: Path, capsys) -> None:
    from backend.nerf_cli import main

    model = tmp_path / "m.pt"
    assert main(["nerf", "fit", str(scene), "--out", str(model), "--steps", "40", "--threads", "1"]) == 0
    assert "held-out PSNR" in capsys.readouterr().out
    assert main(["nerf", "render", str(model), "--transforms", str(scene), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "PSNR vs ground truth" in out and len(list((tmp_path / "r").glob("*.png"))) == 4
    assert main(["nerf", "points", str(model), "-o", str(tmp_path / "p.ply"), "--max-points", "1000"]) == 0
    assert (tmp_path / "p.ply").read_bytes().startswith(b"ply\n")
    assert main(["nerf", "fit", str(tmp_path / "nowhere"), "--out", str(model), "--steps", "1"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_server_ops(scene: Path) -> None:
    from backend import nerf_ops
    from backend.ops import Job, JobError

    train = load_transforms(scene, "train")
    blobs = {}
    for i, img in enumerate(train.images):
        buf = io.BytesIO()
        Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGBA").save(buf, format="PNG")
        blobs[f"image_{i}"] = buf.getvalue()
    params = {"field": "fast", "steps": 30, "camera_angle_x": 0.6911112070083618,
              "transform_matrices": train.c2w.tolist(), "aabb": train.aabb.tolist()}
    seen = []
    job = Job("j1", "nerf_fit", params, blobs, "cpu", _progress=lambda j, v, s, e, b: seen.append((v, s, b)))
    out = nerf_ops.nerf_fit(job)
    mid = out.meta["model_id"]
    assert out.blobs["model"].dtype == np.uint8 and seen and seen[-1][0] <= 1.0
    r = nerf_ops.nerf_render(Job("j2", "nerf_render", {"model_id": mid, "transform_matrices": train.c2w[:2].tolist(),
                                                       "camera_angle_x": 0.6911112070083618, "w": 32, "h": 32}, {}))
    assert r.blobs["image_0"].shape == (32, 32, 3) and r.blobs["image_0"].dtype == np.uint8
    p = nerf_ops.nerf_points(Job("j3", "nerf_points", {"model_id": mid, "max_points": 300}, {}))
    assert p.blobs["xyz"].shape[1] == 3 and len(p.blobs["xyz"]) <= 300
    # evicted / unknown id: the saved model blob brings it back
    p2 = nerf_ops.nerf_points(Job("j4", "nerf_points", {"model_id": "gone", "max_points": 50},
                                  {"model": out.blobs["model"]}))
    assert len(p2.blobs["xyz"]) <= 50
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_points(Job("j5", "nerf_points", {"model_id": "gone"}, {}))
    assert e.value.code == "MODEL"
    bad = dict(params, transform_matrices=train.c2w.tolist()[:-1] + [np.zeros((4, 4)).tolist()])
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_fit(Job("j6", "nerf_fit", bad, blobs))
    assert e.value.code == "BAD_INPUT" and "bottom row" in e.value.message
    cancelled = Job("j7", "nerf_fit", params, blobs)
    cancelled._cancel.set()
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_fit(cancelled)
    assert e.value.code == "CANCELLED"
