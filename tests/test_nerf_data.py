"""The transforms.json loader (the core reader + the backend's pixels): the convention it accepts and
the errors it gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image2points.addon.core import nerf_capture as nc
from image2points.addon.core import transforms as tj
from image2points.addon.core.nerf_capture import Intrinsics
from image2points.backend.nerf.dataset import (
    NerfDataError,
    cameras_from_transforms,
    estimate_aabb,
    load_transforms,
)


def _pose(z: float = 4.0) -> list[list[float]]:
    m = np.eye(4)
    m[2, 3] = z
    return m.tolist()


def _dataset(tmp: Path, n: int = 3, size: tuple[int, int] = (8, 6), ext: bool = False, mode: str = "RGBA",
             **top) -> Path:
    frames = []
    for i in range(n):
        arr = np.full((size[1], size[0], 4 if mode == "RGBA" else 3), 40 * i, np.uint8)
        if mode == "RGBA":
            arr[..., 3] = 128
        Image.fromarray(arr, mode).save(tmp / f"r_{i}.png")
        frames.append({"file_path": f"./r_{i}" + (".png" if ext else ""), "transform_matrix": _pose(4.0 + i)})
    doc = {"camera_angle_x": 0.6911112, **top, "frames": frames}
    (tmp / "transforms_train.json").write_text(json.dumps(doc))
    return tmp


def test_loads_blender_convention_with_and_without_extension(tmp_path: Path) -> None:
    for ext in (False, True):
        d = _dataset(tmp_path, ext=ext)
        data = load_transforms(d, "train")
        assert data.images.shape == (3, 6, 8, 4) and data.images.dtype == np.float32
        assert data.has_alpha and data.images[0, 0, 0, 3] == pytest.approx(128 / 255)
        assert data.intrinsics.fl_x == pytest.approx(0.5 * 8 / math.tan(0.5 * 0.6911112))
        assert (data.intrinsics.cx, data.intrinsics.cy) == (4.0, 3.0)
        # evaluation background is white: transparent pixels become white
        assert data.rgb_on()[0, 0, 0, 0] == pytest.approx(0.0 * 0.5 + 1.0 * (1 - 128 / 255), abs=1e-6)


def test_rgb_images_and_explicit_focal(tmp_path: Path) -> None:
    d = _dataset(tmp_path, mode="RGB", fl_x=10.0, fl_y=11.0, cx=3.0, cy=2.5, w=8, h=6)
    (d / "transforms_train.json").rename(d / "transforms.json")
    data = load_transforms(d / "transforms.json")
    assert not data.has_alpha and np.all(data.images[..., 3] == 1.0)
    i = data.intrinsics
    assert (i.fl_x, i.fl_y, i.cx, i.cy, i.w, i.h) == (10.0, 11.0, 3.0, 2.5, 8, 6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    """What the add-on's capture writes (core transforms_doc + PNGs) loads back here."""
    intr = Intrinsics(w=16, h=12, fl_x=20.0, fl_y=20.0, cx=8.0, cy=6.0)
    c2w = np.stack([np.array(_pose(3.0)), np.array(_pose(5.0))])
    imgs = np.random.default_rng(0).uniform(size=(2, 12, 16, 4)).astype(np.float32)
    (tmp_path / "test").mkdir()
    for name, img in zip("ab", imgs):
        Image.fromarray((img * 255.0 + 0.5).astype(np.uint8)).save(tmp_path / "test" / f"{name}.png")
    doc = tj.transforms_doc(intr, [("./test/a", c2w[0]), ("./test/b", c2w[1])], aabb=[[-1, -1, -1], [1, 1, 1.0]])
    tj.write_json(str(tmp_path / "transforms_test.json"), doc)
    data = load_transforms(tmp_path, "test")
    assert np.allclose(data.c2w, c2w) and data.aabb is not None
    assert np.abs(data.images - imgs).max() <= 0.5 / 255 + 1e-6
    cams, intr2, names, _ = cameras_from_transforms(tmp_path / "transforms_test.json")
    assert np.allclose(cams, c2w) and intr2.fl_x == pytest.approx(20.0) and names == ["./test/a", "./test/b"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d, p: (p / "r_1.png").unlink(), "image './r_1' not found"),
    (lambda d, p: d["frames"][1].update(transform_matrix=np.zeros((4, 4)).tolist()), "bottom row"),
    (lambda d, p: d["frames"][1].update(transform_matrix=np.diag([1.0, 1.0, 0.0, 1.0]).tolist()), "singular"),
    (lambda d, p: d["frames"][1].update(transform_matrix=np.diag([1.0, 2.0, 1.0, 1.0]).tolist()), "non-uniform scale"),
    (lambda d, p: d["frames"][1].update(transform_matrix=np.diag([1.0, 1.0, -1.0, 1.0]).tolist()), "mirrored"),
    (lambda d, p: d["frames"][1].update(transform_matrix=[[1, 0.6, 0, 0], [0, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "shear"),
    (lambda d, p: d["frames"][0].update(transform_matrix=[[1, 0, 0], [0, 1, 0]]), "must be 4x4"),
    (lambda d, p: d["frames"][0].update(transform_matrix=[[float("nan")] * 4] * 4), "NaN"),
    (lambda d, p: Image.new("RGBA", (9, 6)).save(p / "r_2.png"), "all images must have the same size"),
    (lambda d, p: d.pop("camera_angle_x"), "no intrinsics"),
    (lambda d, p: d.update(camera_angle_x=40.0), "degrees given?"),
    (lambda d, p: d.update(w=10), "declares w x h = 10 x 6"),
    (lambda d, p: d.update(k1=0.1), "distortion"),
    (lambda d, p: d.update(frames=[]), "non-empty list"),
    (lambda d, p: d["frames"][0].pop("transform_matrix"), "no 'transform_matrix'"),
    (lambda d, p: (p / "r_0.png").write_bytes(b"not a png"), "cannot"),
    (lambda d, p: d.update(aabb=[[1, 1, 1], [0, 0, 0]]), "'aabb'"),
])
def test_rejects_bad_data_with_actionable_messages(tmp_path: Path, mutate, message: str) -> None:
    d = _dataset(tmp_path)
    tf = d / "transforms_train.json"
    doc = json.loads(tf.read_text())
    mutate(doc, d)
    tf.write_text(json.dumps(doc))
    with pytest.raises(NerfDataError, match=message.replace("?", r"\?").replace("(", r"\(")) as info:
        load_transforms(d, "train")
    assert isinstance(info.value, ValueError)


def test_rejects_bad_json_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "transforms.json").write_text('{"frames": [ }')
    with pytest.raises(NerfDataError, match="invalid JSON at line 1"):
        load_transforms(tmp_path)
    with pytest.raises(NerfDataError, match="file not found"):
        load_transforms(tmp_path / "missing.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NerfDataError, match="no transforms_train.json or transforms.json"):
        load_transforms(empty)


def test_uniform_scale_is_divided_out_and_aabb_estimate_contains_target() -> None:
    m = np.eye(4)
    m[:3, :3] *= 2.0
    m[:3, 3] = [1, 2, 3]
    out = nc.check_pose(m, "x")
    assert np.allclose(out[:3, :3], np.eye(3)) and np.allclose(out[:3, 3], [1, 2, 3])
    # cameras on a circle looking at the origin
    poses = []
    for a in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        eye = np.array([4 * np.cos(a), 4 * np.sin(a), 0.0])
        f = -eye / 4
        r = np.cross(f, [0, 0, 1.0])
        u = np.cross(r, f)
        p = np.eye(4)
        p[:3, 0], p[:3, 1], p[:3, 2], p[:3, 3] = r, u, -f, eye
        poses.append(p)
    box = estimate_aabb(np.stack(poses), Intrinsics(w=50, h=50, fl_x=50, fl_y=50, cx=25, cy=25))
    assert np.all(box[0] < 0) and np.all(box[1] > 0) and np.all(box[1] - box[0] < 8)


def test_image_arrays_refuse_nan_and_scale_uint16() -> None:
    from image2points.backend.nerf.dataset import decode_image

    bad = np.full((4, 5, 3), 0.5, np.float32)
    bad[1, 2, 0] = np.nan
    with pytest.raises(NerfDataError, match="image_3: image array has NaN/inf"):
        decode_image(bad, "image_3")
    bad[1, 2, 0] = np.inf
    with pytest.raises(NerfDataError, match="NaN/inf"):
        decode_image(bad.astype(np.float16), "image_3")
    # a 16-bit render is scaled by 65535, not clipped to white
    u16 = np.array([[[0, 32768, 65535, 65535]]], np.uint16)
    out = decode_image(u16, "x")
    assert out.dtype == np.float32 and out.shape == (1, 1, 4)
    np.testing.assert_allclose(out[0, 0], [0.0, 32768 / 65535, 1.0, 1.0], atol=1e-7)
    with pytest.raises(NerfDataError, match="dtype int32 is not supported"):
        decode_image(np.zeros((2, 2, 3), np.int32), "x")


def _looking_along(eye, forward) -> np.ndarray:
    f = np.asarray(forward, float) / np.linalg.norm(forward)
    r = np.cross(f, [0, 0, 1.0])
    r /= np.linalg.norm(r)
    p = np.eye(4)
    p[:3, 0], p[:3, 1], p[:3, 2], p[:3, 3] = r, np.cross(r, f), -f, eye
    return p


def test_aabb_estimate_refuses_parallel_or_outward_cameras(tmp_path: Path) -> None:
    intr = Intrinsics(w=50, h=50, fl_x=50, fl_y=50, cx=25, cy=25)
    # five cameras side by side, all looking along +Y: their axes never meet
    side = np.stack([_looking_along([x, 0.0, 1.0], [0, 1, 0]) for x in np.linspace(-2, 2, 5)])
    with pytest.raises(NerfDataError, match=r"parallel axes.*give the scene box as 'aabb'"):
        estimate_aabb(side, intr)
    with pytest.raises(NerfDataError, match="parallel"):  # a single camera is the same case
        estimate_aabb(side[:1], intr)
    # inside-out: cameras on a ring looking away from its centre meet behind themselves
    out = np.stack([_looking_along([np.cos(a), np.sin(a), 0.0], [np.cos(a), np.sin(a), 0.0])
                    for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    with pytest.raises(NerfDataError, match="behind most of them"):
        estimate_aabb(out, intr)
    # the same five side-by-side cameras converging a little (toe-in of ~6 deg) are fine
    toe = np.stack([_looking_along([x, 0.0, 1.0], [-0.1 * x, 1, 0]) for x in np.linspace(-2, 2, 5)])
    box = estimate_aabb(toe, intr)
    assert np.all(box[0] < [0, 10, 1]) and np.all(box[1] > [0, 10, 1])


def test_render_cameras_with_a_corrupt_first_image_is_a_data_error(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    (d / "r_0.png").write_bytes(b"not a png")
    with pytest.raises(NerfDataError, match="cannot read the image size.*give 'w' and 'h'"):
        cameras_from_transforms(d / "transforms_train.json")
