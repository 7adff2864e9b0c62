"""End-to-end NeRF on a tiny scene rendered by Blender: fit beats trivial baselines on held-out
views, save/load is exact, points/PLY, CLI and server ops."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image2points.backend.nerf.dataset import load_transforms
from image2points.backend.nerf.rendering import render_image
from image2points.backend.nerf.training import (
    FitConfig,
    evaluate,
    fit,
    load_model,
    model_from_bytes,
    model_to_bytes,
    psnr,
    save_model,
)

pytestmark = [pytest.mark.bpy, pytest.mark.slow]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    pytest.importorskip("bpy")
    from image2points.backend.data.nerf_scene import make_scene

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
    from image2points.backend.nerf.points import extract_points
    from image2points.backend.ply import write_ply

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
    from image2points.backend.nerf.cli import main

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
    from image2points.backend.nerf import ops as nerf_ops
    from image2points.backend.ops import Job, JobError

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
    # a seed that is not an integer, and lens distortion, are refused as from a transforms file
    for extra, words in (({"seed": "abc"}, "'seed'"), ({"k1": 0.1}, "distortion"),
                         ({"k1": "x"}, "'k1'"), ({"camera_model": "OPENCV_FISHEYE"}, "camera_model")):
        with pytest.raises(JobError) as e:
            nerf_ops.nerf_fit(Job("j6b", "nerf_fit", dict(params, **extra), blobs))
        assert e.value.code == "BAD_INPUT" and words in e.value.message, (extra, e.value.message)
    cancelled = Job("j7", "nerf_fit", params, blobs)
    cancelled._cancel.set()
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_fit(cancelled)
    assert e.value.code == "CANCELLED"


# -- audit fixes: cancel and caps for points/render, size budget, unusable boxes, CLI errors ---------


def test_points_and_render_stop_on_cancel(fitted, scene: Path) -> None:
    from image2points.backend.nerf import ops as nerf_ops
    from image2points.backend.nerf.points import extract_points
    from image2points.backend.nerf.rendering import Cancelled
    from image2points.backend.ops import Job, JobError

    model, _ = fitted
    calls = {"n": 0}

    def stop_at_third() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(Cancelled):
        extract_points(model, chunk=256, should_stop=stop_at_third)
    assert calls["n"] == 3  # checked per chunk of rays: stopped after two chunks
    calls["n"] = 0
    test = load_transforms(scene, "test")
    with pytest.raises(Cancelled):
        render_image(model.field, test.c2w[0], test.intrinsics, chunk=256, should_stop=stop_at_third)
    assert calls["n"] == 3
    # the server ops report a cancel as CANCELLED, like nerf_fit
    mid = nerf_ops._store(model)
    job = Job("p", "nerf_points", {"model_id": mid, "max_points": 100}, {})
    job._cancel.set()
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_points(job)
    assert e.value.code == "CANCELLED"
    n = {"k": 0}

    def cancel_mid_image(j, v, s, x, b) -> None:  # progress after image 0: cancel during image 1
        n["k"] += 1
        j._cancel.set()

    job = Job("r", "nerf_render", {"model_id": mid, "transform_matrices": test.c2w[:3].tolist(),
                                   "fl_x": 40.0, "w": 32, "h": 32}, {}, _progress=cancel_mid_image)
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_render(job)
    assert e.value.code == "CANCELLED" and n["k"] == 1


def test_point_extraction_casts_a_bounded_number_of_rays(fitted) -> None:
    from image2points.addon.core.nerf_capture import Intrinsics
    from image2points.backend.nerf.points import (
        MAX_POINT_RAYS,
        MAX_POINT_VIEWS,
        extract_points,
        point_cameras,
    )

    # the add-on's largest fit (400 views of 2048^2) and NeRF-synthetic (100 views of 800^2)
    for n, size in ((400, 2048), (100, 800), (100, 200), (24, 32)):
        cams = np.repeat(np.eye(4)[None], n, 0) + np.arange(n)[:, None, None]
        intr = Intrinsics(w=size, h=size, fl_x=1.2 * size, fl_y=1.2 * size, cx=size / 2, cy=size / 2)
        sub, small = point_cameras(cams, intr)
        under = n * size * size <= MAX_POINT_RAYS  # then all cameras at full resolution
        assert len(sub) == (n if under else min(n, MAX_POINT_VIEWS)) and (small == intr) == under
        assert len(sub) * small.w * small.h <= MAX_POINT_RAYS
        assert len(np.unique(sub[:, 0, 0])) == len(sub) and sub[0, 0, 0] == 1 and sub[-1, 0, 0] == n
        assert small.fl_x / small.w == pytest.approx(intr.fl_x / intr.w, rel=0.05)  # same FOV
    model, _ = fitted
    chunks = {"n": 0}

    def count() -> bool:
        chunks["n"] += 1
        return False

    # 24 views of 32 x 32 under a 2400-ray budget: 100 rays (one chunk of 100) per view
    xyz, _ = extract_points(model, max_rays=2400, chunk=100, should_stop=count)
    assert chunks["n"] == 24 and 0 < len(xyz) <= 2400


def _one_error(err: str) -> str:
    """The CLI's stderr ends in exactly one ``error:`` line (after any progress bar), no traceback."""
    lines = err.rstrip("\n").split("\n")
    assert "Traceback" not in err and lines[-1].startswith("error: "), err
    assert sum(ln.startswith("error:") for ln in lines) == 1, err
    return lines[-1]


def test_fit_refuses_more_pixels_than_the_budget(scene: Path, tmp_path: Path, capsys) -> None:
    from image2points.addon.core.nerf_capture import Intrinsics
    from image2points.backend.nerf import ops as nerf_ops
    from image2points.backend.nerf.cli import main
    from image2points.backend.nerf.dataset import NerfDataset
    from image2points.backend.nerf.training import MAX_FIT_PIXELS, FitTooLarge
    from image2points.backend.ops import Job, JobError

    assert 100 * 800 * 800 <= MAX_FIT_PIXELS < 5 * 4096 * 4096  # NeRF-synthetic fits, more does not
    big = NerfDataset(np.broadcast_to(np.zeros((1, 1, 1, 4), np.float32), (5, 4096, 4096, 4)),
                      np.repeat(np.eye(4, dtype=np.float32)[None], 5, 0), Intrinsics(4096, 4096, 4e3, 4e3, 2048, 2048),
                      aabb=np.array([[-1, -1, -1], [1, 1, 1.0]]))
    with pytest.raises(FitTooLarge, match="Mpx"):
        fit(big, FitConfig(steps=1))
    mats = [np.eye(4).tolist()] * 5
    with pytest.raises(JobError) as e:  # w/h given: refused before any image is decoded
        nerf_ops.nerf_fit(Job("a", "nerf_fit", {"transform_matrices": mats, "fl_x": 4e3, "w": 4096, "h": 4096,
                                                "steps": 1}, {}))
    assert e.value.code == "TOO_LARGE" and "Mpx" in e.value.message
    with pytest.raises(JobError) as e:  # no w/h: refused after the first image, not after all 17
        nerf_ops.nerf_fit(Job("b", "nerf_fit", {"transform_matrices": [np.eye(4).tolist()] * 17, "fl_x": 2e3,
                                                "steps": 1}, {"image_0": np.zeros((2048, 2048, 3), np.uint8)}))
    assert e.value.code == "TOO_LARGE"
    doc = {"camera_angle_x": 0.69, "w": 4096, "h": 4096,
           "frames": [{"file_path": f"./r_{i}", "transform_matrix": np.eye(4).tolist()} for i in range(5)]}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    assert main(["nerf", "fit", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--steps", "1"]) == 2
    assert _one_error(capsys.readouterr().err).startswith("error: 5 images of 4096 x 4096")


def test_a_box_no_camera_ray_meets_is_bad_input(scene: Path, tmp_path: Path, capsys) -> None:
    from image2points.backend.nerf import ops as nerf_ops
    from image2points.backend.nerf.cli import main
    from image2points.backend.nerf.dataset import NerfDataError
    from image2points.backend.ops import Job, JobError

    far = [[50.0, 50.0, 50.0], [51.0, 51.0, 51.0]]
    train = load_transforms(scene, "train")
    train.aabb = np.array(far)
    with pytest.raises(NerfDataError, match="no camera ray passes through the aabb"):
        fit(train, FitConfig(steps=1))
    blobs = {f"image_{i}": (img * 255 + 0.5).astype(np.uint8) for i, img in enumerate(train.images[:4])}
    with pytest.raises(JobError) as e:
        nerf_ops.nerf_fit(Job("a", "nerf_fit", {"transform_matrices": train.c2w[:4].tolist(), "steps": 1, "aabb": far,
                                                "camera_angle_x": 0.69}, blobs))
    assert e.value.code == "BAD_INPUT" and "no camera ray" in e.value.message
    data = tmp_path / "far"
    data.mkdir()
    doc = json.loads((scene / "transforms_train.json").read_text())
    doc["aabb"] = far
    for fr in doc["frames"]:
        fr["file_path"] = str(scene / fr["file_path"])
    (data / "transforms_train.json").write_text(json.dumps(doc))
    assert main(["nerf", "fit", str(data), "--out", str(tmp_path / "m.pt"), "--steps", "1"]) == 2
    assert "no camera ray passes through the aabb" in _one_error(capsys.readouterr().err)
    assert not (tmp_path / "m.pt").exists()


def _cli(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "image2points.backend.nerf.cli", "nerf", *args], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    return r.returncode, r.stderr


def test_cli_errors_are_one_line_with_exit_code_2(scene: Path, fitted, tmp_path: Path, capsys) -> None:
    import shutil

    from image2points.backend.nerf.cli import main

    model = save_model(fitted[0], tmp_path / "m.pt")
    # bad numbers are usage errors (argparse, exit 2), never a traceback
    for args in (["fit", str(scene), "--out", str(tmp_path / "x.pt"), "--threads", "-1"],
                 ["points", str(model), "-o", str(tmp_path / "p.ply"), "--max-points", "-1"],
                 ["fit", str(scene), "--out", str(tmp_path / "x.pt"), "--steps", "0"],
                 ["points", str(model), "-o", str(tmp_path / "p.ply"), "--min-opacity", "2"]):
        code, err = _cli(*args)
        assert code == 2 and "Traceback" not in err and "error: argument" in err, (args, err)
    # --out is checked before fitting: a folder, or a path under a file
    (tmp_path / "afile").write_text("x")
    for out, why in ((tmp_path, "is a folder"), (tmp_path / "afile" / "m.pt", "cannot write --out")):
        assert main(["nerf", "fit", str(scene), "--out", str(out), "--steps", "3"]) == 2
        assert why in _one_error(capsys.readouterr().err)
    # held-out views that cannot be read: the model is saved, the evaluation is a one-line error
    data = tmp_path / "data"
    shutil.copytree(scene, data)
    (data / "transforms_test.json").write_text("{ not json")
    assert main(["nerf", "fit", str(data), "--out", str(tmp_path / "ok.pt"), "--steps", "2"]) == 2
    assert "model saved, but the held-out evaluation failed" in _one_error(capsys.readouterr().err)
    assert (tmp_path / "ok.pt").is_file()
    # render: a corrupt first image and no w/h in the file; an output folder that is a file
    doc = json.loads((data / "transforms_train.json").read_text())
    del doc["w"], doc["h"]
    (data / "transforms_test.json").write_text(json.dumps(doc))
    (data / (doc["frames"][0]["file_path"] + ".png")).write_bytes(b"garbage")
    assert main(["nerf", "render", str(model), "--transforms", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "cannot read the image size" in _one_error(capsys.readouterr().err)
    assert main(["nerf", "render", str(model), "--transforms", str(scene), "--out", str(tmp_path / "afile")]) == 2
    assert "cannot create the output folder" in _one_error(capsys.readouterr().err)
