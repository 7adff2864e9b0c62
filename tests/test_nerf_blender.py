"""The Blender side of the NeRF feature (issue 6) on the bpy wheel.

Pure checks of the camera maths against Blender's own projection
(``bpy_extras.object_utils.world_to_camera_view``), the capture and import operators, and the
round trip against a real backend process: capture -> fit (short budget, progress observed) ->
render a held-out camera into an Image datablock -> import points; cancel stops a fit.
Renders are tiny (Cycles, a few samples) so the whole file stays cheap on a busy 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.bpy

bpy = pytest.importorskip("bpy", reason="needs the bpy wheel: pip install bpy==4.2.23")

from opstub import OperatorStub  # noqa: E402

from image2points.addon.core import camera  # noqa: E402
from image2points.addon.core import nerf_capture as nc  # noqa: E402
from image2points.addon.core import nerf_requests as nreq  # noqa: E402
from image2points.addon.core import transforms as tj  # noqa: E402


@pytest.fixture(scope="module")
def i2p():
    from image2points import addon

    addon.register()
    yield bpy
    addon.unregister()


def build_scene(engine: str = "CYCLES", samples: int = 4) -> None:
    """Two coloured primitives, a sun and a grey world; Cycles on the CPU, no denoiser."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    for name, prim, loc, colour in (("Red Cube", "cube", (-0.45, 0.0, 0.0), (0.8, 0.05, 0.05)),
                                    ("Blue Ball", "ball", (0.5, 0.1, 0.1), (0.05, 0.15, 0.9))):
        if prim == "cube":
            bpy.ops.mesh.primitive_cube_add(size=0.7, location=loc)
        else:
            bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=loc, segments=24, ring_count=12)
        obj = bpy.context.active_object
        obj.name = name
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*colour, 1.0)
        obj.data.materials.append(mat)
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    scene.world = world
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.6, 0.2, 0.4)
    scene.collection.objects.link(sun)
    scene.render.engine = engine
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.view_settings.view_transform = "Standard"
    for o in scene.objects:
        o.select_set(o.type == "MESH")


def set_capture(scene, views: int, test_views: int, resolution: int, samples: int = 4) -> None:
    s = scene.image2points
    s.nerf_views, s.nerf_test_views, s.nerf_resolution, s.nerf_samples = (views, test_views,
                                                                         resolution, samples)


def load_rgba(path: str) -> np.ndarray:
    """A PNG as (H, W, 4) float straight alpha, top row first (Blender's own loader)."""
    img = bpy.data.images.load(path, check_existing=False)
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    return px.reshape(h, w, 4)[::-1]


def image_rgba(img) -> np.ndarray:
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(h, w, 4)[::-1]


# -- pure maths against Blender's projection ----------------------------------------------------

PROJECTION_CASES = [
    # sensor_fit, res_x, res_y, percentage, aspect_x, aspect_y, shift_x, shift_y
    ("AUTO", 64, 48, 100, 1.0, 1.0, 0.0, 0.0),
    ("AUTO", 48, 64, 100, 1.0, 1.0, 0.0, 0.0),  # portrait AUTO: sensor_width spans the height
    ("AUTO", 100, 70, 50, 1.0, 1.0, 0.0, 0.0),
    ("AUTO", 60, 80, 100, 2.0, 1.0, 0.0, 0.0),  # wide pixels turn AUTO horizontal
    ("HORIZONTAL", 64, 48, 100, 1.0, 1.0, 0.0, 0.0),
    ("HORIZONTAL", 48, 64, 100, 1.0, 1.5, 0.0, 0.0),
    ("HORIZONTAL", 120, 80, 25, 1.0, 1.0, 0.0, 0.0),
    ("VERTICAL", 64, 48, 100, 1.0, 1.0, 0.0, 0.0),
    ("VERTICAL", 48, 64, 200, 1.3, 1.0, 0.0, 0.0),
    ("AUTO", 90, 50, 100, 1.0, 1.0, 0.1, -0.05),
    ("VERTICAL", 40, 80, 100, 1.0, 1.2, -0.15, 0.2),
]


def projection_error(scene, cam_obj, intr: nc.Intrinsics, rng) -> float:
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    pts = rng.uniform(-0.6, 0.6, (40, 3)) + [0.1, 0.2, 0.3]
    ours = nc.project(pts, nc.clean_pose(cam_obj.matrix_world), intr)
    worst = 0.0
    for p, (u, v, d) in zip(pts, ours):
        c = world_to_camera_view(scene, cam_obj, Vector(p.tolist()))
        worst = max(worst, abs(c.x * intr.w - u), abs((1.0 - c.y) * intr.h - v), abs(c.z - d))
    return worst


@pytest.mark.parametrize("case", PROJECTION_CASES, ids=lambda c: "-".join(map(str, c)))
def test_intrinsics_match_blender_projection(case):
    from mathutils import Matrix

    fit, rx, ry, pct, ax, ay, sx, sy = case
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    cam = bpy.data.cameras.new("cam")
    obj = bpy.data.objects.new("cam", cam)
    scene.collection.objects.link(obj)
    cam.lens, cam.sensor_width, cam.sensor_height = rng.uniform(20, 80), rng.uniform(20, 40), 24.0
    cam.sensor_fit, cam.shift_x, cam.shift_y = fit, sx, sy
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = rx, ry, pct
    r.pixel_aspect_x, r.pixel_aspect_y = ax, ay
    # a scaled camera: Blender projects with the normalised matrix, so must we
    obj.matrix_world = Matrix((camera.look_at(np.array([3.0, -4.0, 2.0]), np.array([0.1, 0.2, 0.3]))
                               @ np.diag([1.7, 1.7, 1.7, 1.0])).tolist())
    bpy.context.view_layer.update()
    intr = nc.intrinsics_from_camera(cam, r, allow_shift=True)
    assert (intr.w, intr.h) == (rx * pct // 100, ry * pct // 100)
    assert projection_error(scene, obj, intr, rng) < 1e-3
    if fit != "VERTICAL" and ax == ay and (fit == "HORIZONTAL" or rx >= ry):
        assert intr.angle_x == pytest.approx(cam.angle_x, abs=1e-6)  # NeRF's camera_angle_x
    # and back: the settings import_transforms gives a camera reproduce the same intrinsics
    st = nc.camera_settings(intr)
    cam2 = bpy.data.cameras.new("cam2")
    for key in ("lens", "sensor_width", "sensor_fit", "shift_x", "shift_y"):
        setattr(cam2, key, st[key])
    for key in ("resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x",
                "pixel_aspect_y"):
        setattr(r, key, st[key])
    obj.data = cam2
    bpy.context.view_layer.update()
    back = nc.intrinsics_from_camera(cam2, r, allow_shift=True)
    assert (back.w, back.h) == (intr.w, intr.h)
    np.testing.assert_allclose([back.fl_x, back.fl_y, back.cx, back.cy],
                               [intr.fl_x, intr.fl_y, intr.cx, intr.cy], rtol=1e-5, atol=1e-4)
    assert projection_error(scene, obj, back, rng) < 1e-3


def test_unsupported_cameras_are_clear_errors():
    with pytest.raises(nc.DatasetError, match="Shift X/Y to 0"):
        nc.intrinsics_from_params(50, 36, 24, "AUTO", 64, 64, shift_x=0.1)
    with pytest.raises(nc.DatasetError, match="perspective"):
        nc.intrinsics_from_params(50, 36, 24, "AUTO", 64, 64, cam_type="ORTHO")
    with pytest.raises(nc.DatasetError, match="mirrored"):
        nc.clean_pose(np.diag([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(nc.DatasetError, match="singular"):
        nc.check_pose(np.diag([1.0, 0.0, 1.0, 1.0]).tolist())
    with pytest.raises(nc.DatasetError, match="not a rotation"):
        nc.check_pose([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    # Blender's default camera is lego's camera_angle_x
    assert nc.intrinsics_from_params(50, 36, 24, "AUTO", 800, 800).angle_x == pytest.approx(
        0.6911112, abs=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"w": "24px"}, "'w' must be an integer, got '24px'"),
    ({"h": [24]}, "'h' must be an integer"),
    ({"fl_x": "abc"}, "'fl_x' must be a number"),
    ({"fl_x": None, "camera_angle_x": "wide"}, "'camera_angle_x' must be a number"),
    ({"cx": "centre"}, "'cx' must be a number"),
    ({"fl_x": None, "camera_angle_x": 40.0}, r"must be in \(0, pi\) radians, got 40.0 \(degrees given\?\)"),
    ({"fl_x": None, "camera_angle_x": -0.5}, r"must be in \(0, pi\)"),
    ({"fl_x": None, "fl_y": None, "camera_angle_x": 0.69, "camera_angle_y": 3.5}, "'camera_angle_y' must be in"),
])
def test_intrinsics_from_doc_errors_are_dataset_errors(change, message):
    doc = {"w": 24, "h": 24, "fl_x": 30.0, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(nc.DatasetError, match=message):
        tj.intrinsics_from_doc(doc)
    # the valid spellings still read, numeric strings included (as the backend's float()/int())
    assert tj.intrinsics_from_doc({"w": "24", "h": 24, "camera_angle_x": "0.69"}).fl_x == pytest.approx(
        12 / math.tan(0.345))
    assert tj.intrinsics_from_doc({"w": 24, "h": 24, "fl_x": 30, "cx": 0}).cx == 0.0


def test_operators_report_unreadable_intrinsics(i2p, tmp_path):
    """import_transforms and fit_nerf report a bad number as a clear error, not a traceback."""
    from images import png_bytes

    bpy.ops.wm.read_factory_settings(use_empty=True)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(np.zeros((8, 8, 4), np.uint8)))
    doc = {"camera_angle_x": 0.69, "w": "8px", "h": 8,
           "frames": [{"file_path": "./images/a", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    with pytest.raises(RuntimeError, match="'w' must be an integer, got '8px'") as info:
        bpy.ops.image2points.import_transforms(filepath=str(tmp_path / "transforms_train.json"))
    assert "Traceback" not in str(info.value)
    with pytest.raises(RuntimeError, match="BAD_INPUT") as info:
        bpy.ops.image2points.fit_nerf(endpoint="tcp://127.0.0.1:1", dataset=str(tmp_path))
    assert "Traceback" not in str(info.value)
    state = bpy.context.window_manager.image2points
    assert state.nerf_job.error_code == "BAD_INPUT" and "'w' must be an integer" in state.nerf_job.error_message
    doc["w"], doc["camera_angle_x"] = 8, 40.0
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    with pytest.raises(RuntimeError, match="degrees given"):
        bpy.ops.image2points.import_transforms(filepath=str(tmp_path / "transforms_train.json"))


def test_transforms_reader_validates(tmp_path):
    from images import png_bytes

    (tmp_path / "images").mkdir()
    rgba = np.zeros((8, 8, 4), np.uint8)
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(rgba))
    (tmp_path / "images" / "b.png").write_bytes(png_bytes(np.zeros((8, 9, 4), np.uint8)))
    eye = np.eye(4).tolist()
    doc = {"camera_angle_x": 0.69, "frames": [{"file_path": "./images/a", "transform_matrix": eye}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    ds = tj.read_transforms(str(tmp_path))
    assert (ds.intrinsics.w, ds.intrinsics.h) == (8, 8) and ds.frames[0][0].endswith("a.png")
    assert ds.intrinsics.angle_x == pytest.approx(0.69)
    doc["frames"].append({"file_path": "./images/b.png", "transform_matrix": eye})
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    with pytest.raises(nc.DatasetError, match="mixed sizes"):
        tj.read_transforms(str(tmp_path))
    doc["frames"][1] = {"file_path": "./images/missing", "transform_matrix": eye}
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    with pytest.raises(nc.DatasetError, match="not found"):
        tj.read_transforms(str(tmp_path))
    with pytest.raises(nc.DatasetError, match="no transforms_test.json"):
        tj.read_transforms(str(tmp_path / "images"), "test")


# -- capture and import -------------------------------------------------------------------------

def test_capture_writes_a_nerf_dataset_and_restores_the_scene(i2p, tmp_path):
    build_scene(samples=2)
    scene = bpy.context.scene
    set_capture(scene, views=6, test_views=2, resolution=24, samples=2)
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = 640, 360, 50
    before = (r.resolution_x, r.resolution_y, r.resolution_percentage, r.film_transparent,
              r.filepath, scene.cycles.samples, r.image_settings.color_mode, scene.camera)
    threads = threading.active_count()
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    assert threading.active_count() == threads
    assert (r.resolution_x, r.resolution_y, r.resolution_percentage, r.film_transparent,
            r.filepath, scene.cycles.samples, r.image_settings.color_mode, scene.camera) == before
    assert scene.image2points.nerf_dataset == str(tmp_path)
    train = json.loads((tmp_path / "transforms_train.json").read_text())
    test = json.loads((tmp_path / "transforms_test.json").read_text())
    assert len(train["frames"]) == 6 and len(test["frames"]) == 2
    assert (train["w"], train["h"]) == (24, 24) and train["cx"] == 12.0
    cams = {o.name: o for o in bpy.data.collections["NeRF " + tmp_path.name].objects}
    assert len(cams) == 8
    assert bpy.data.collections[cams["NeRF train_000"].users_collection[0].name].name in \
        bpy.data.collections["Image2Points NeRF Cameras"].children
    for split, doc in (("train", train), ("test", test)):
        for i, fr in enumerate(doc["frames"]):
            cam = cams[f"NeRF {split}_{i:03d}"]
            assert doc["camera_angle_x"] == pytest.approx(cam.data.angle_x, abs=1e-7)
            m = np.array(fr["transform_matrix"])
            np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-6)
            np.testing.assert_allclose(m, np.array(cam.matrix_world), atol=1e-6)
            assert not os.path.isabs(fr["file_path"])
            rgba = load_rgba(tj.resolve_image(str(tmp_path), fr["file_path"]))
            assert rgba.shape == (24, 24, 4)
            alpha = rgba[..., 3]
            assert 0.02 < (alpha > 0.5).mean() < 0.98  # objects in view, background transparent
    train_pos = np.array([np.array(f["transform_matrix"])[:3, 3] for f in train["frames"]])
    assert (train_pos[:, 2] > 0).all()  # upper hemisphere
    test_pos = np.array([np.array(f["transform_matrix"])[:3, 3] for f in test["frames"]])
    assert np.linalg.norm(test_pos - np.array(train["aabb"]).mean(0), axis=1).min() > \
        np.linalg.norm(train_pos - np.array(train["aabb"]).mean(0), axis=1).max()  # own orbit
    # capturing again into the same folder replaces the cameras instead of piling them up
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    assert len(bpy.data.collections["NeRF " + tmp_path.name].objects) == 8


def test_recapture_without_held_out_views_removes_the_old_test_file(i2p, tmp_path):
    build_scene(samples=1)
    scene = bpy.context.scene
    set_capture(scene, views=3, test_views=1, resolution=12, samples=1)
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    assert len(json.loads((tmp_path / "transforms_test.json").read_text())["frames"]) == 1
    set_capture(scene, views=3, test_views=0, resolution=16, samples=1)
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    # a transforms_test.json left from the first capture (12 px) would be scored against this one
    assert not (tmp_path / "transforms_test.json").exists()
    assert json.loads((tmp_path / "transforms_train.json").read_text())["w"] == 16


class CaptureStub:
    """Stands in for the capture operator instance, to drive its modal path by ticks."""

    def __init__(self, directory: str):
        from image2points.addon import nerf_dataset

        self.op = nerf_dataset.IMAGE2POINTS_OT_capture_views
        self.directory = directory
        self._task = self._timer = None
        self.reports: list[tuple[set[str], str]] = []

    def report(self, level, msg):
        self.reports.append((level, msg))

    def __getattr__(self, name):  # prepare, failed, done, release, _tick, ... from the operator
        return getattr(self.op, name).__get__(self)


def test_capture_modal_path_ticks_and_cancels(i2p, tmp_path):
    build_scene(samples=1)
    scene = bpy.context.scene
    set_capture(scene, views=4, test_views=1, resolution=16, samples=1)
    state = bpy.context.window_manager.image2points
    engine_before, res_before = scene.render.engine, scene.render.resolution_x
    stub = CaptureStub(str(tmp_path / "a"))
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}
    assert state.nerf_job.running and not bpy.ops.image2points.fit_nerf.poll()  # one NeRF job at a time
    assert stub.tick(bpy.context) == {"RUNNING_MODAL"} and state.nerf_job.stage == "view 1/5"
    assert bpy.ops.image2points.cancel_nerf() == {"FINISHED"}
    assert stub.tick(bpy.context) == {"CANCELLED"}
    assert not state.nerf_job.running and state.nerf_job.status == "Capture cancelled"
    assert not (tmp_path / "a" / "transforms_train.json").exists()
    assert (scene.render.engine, scene.render.resolution_x) == (engine_before, res_before)
    assert not scene.render.film_transparent
    stub = CaptureStub(str(tmp_path / "b"))
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}
    ticks = 0
    while (outcome := stub.tick(bpy.context)) == {"RUNNING_MODAL"}:
        ticks += 1
    assert outcome == {"FINISHED"} and ticks == 4 and state.nerf_job.progress == 1.0
    assert len(json.loads((tmp_path / "b" / "transforms_train.json").read_text())["frames"]) == 4
    assert scene.render.resolution_x == res_before and bpy.ops.image2points.fit_nerf.poll()


def test_import_transforms_round_trip(i2p, tmp_path):
    build_scene(samples=1)
    set_capture(bpy.context.scene, views=5, test_views=1, resolution=16, samples=1)
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    captured = {o.name: (np.array(o.matrix_world), o.data.angle_x)
                for o in bpy.data.collections["NeRF " + tmp_path.name].objects}
    doc = json.loads((tmp_path / "transforms_train.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy"):  # the bare NeRF-synthetic form: angle + frames
        doc.pop(key)
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = str(tmp_path / "transforms_train.json")
    assert bpy.ops.image2points.import_transforms(filepath=path) == {"FINISHED"}
    coll = bpy.data.collections[f"NeRF {tmp_path.name} transforms_train"]
    assert len(coll.objects) == 5
    scene = bpy.context.scene
    assert (scene.render.resolution_x, scene.render.resolution_y) == (16, 16)
    assert scene.camera is not None and scene.camera.name in coll.objects
    for obj in coll.objects:
        m, angle = captured[obj.name]
        np.testing.assert_allclose(np.array(obj.matrix_world), m, atol=1e-5)
        assert obj.data.angle_x == pytest.approx(angle, abs=1e-5)
        assert obj.data.sensor_width == 36.0
        intr = nc.intrinsics_from_camera(obj.data, scene.render)
        assert intr.angle_x == pytest.approx(doc["camera_angle_x"], abs=1e-5)


def test_requests_carry_png_bytes_and_poses(i2p, tmp_path):
    build_scene(samples=1)
    set_capture(bpy.context.scene, views=4, test_views=0, resolution=16, samples=1)
    assert bpy.ops.image2points.capture_views(directory=str(tmp_path)) == {"FINISHED"}
    assert not (tmp_path / "transforms_test.json").exists()
    ds = tj.read_transforms(str(tmp_path))
    params, blobs, media = nreq.fit_request(ds, "fast", minutes=0.5)
    assert params["field"] == "fast" and params["minutes"] == 0.5 and "steps" not in params
    assert (params["w"], params["h"]) == (16, 16) and params["camera_angle_x"] == pytest.approx(
        ds.doc["camera_angle_x"], abs=1e-6)
    assert sorted(blobs) == [f"image_{i}" for i in range(4)] == sorted(media)
    for i, (path, m) in enumerate(ds.frames):
        assert blobs[f"image_{i}"] == open(path, "rb").read() and media[f"image_{i}"] == "image/png"
        np.testing.assert_allclose(params["transform_matrices"][i], m)
    json.dumps(params)  # the header is JSON
    rp = nreq.render_request("m1", [ds.frames[0][1]], ds.intrinsics)
    assert rp["model_id"] == "m1" and len(rp["transform_matrices"]) == 1 and rp["w"] == 16
    assert nreq.points_request("m1", 5000) == {"model_id": "m1", "max_points": 5000}


def test_import_transforms_missing_file_is_an_error(i2p, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with pytest.raises(RuntimeError, match="not found"):
        bpy.ops.image2points.import_transforms(filepath=str(tmp_path / "nope.json"))


# -- against a real backend --------------------------------------------------------------------

class FitStub(OperatorStub):
    """Stands in for the fit operator instance."""

    def __init__(self, endpoint: str, dataset: str, minutes: float = 0.0, steps: int = 0):
        from image2points.addon import nerf_fit

        super().__init__(nerf_fit.IMAGE2POINTS_OT_fit_nerf, endpoint, 240.0)
        self.dataset, self.minutes, self.steps = dataset, minutes, steps


def run_ticks(stub: FitStub, ctx, limit: float = 240.0, on_tick=None) -> set[str]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        outcome = stub.modal(ctx)
        if on_tick is not None:
            on_tick()
        if outcome not in ({"RUNNING_MODAL"}, {"PASS_THROUGH"}):
            return outcome
        time.sleep(0.05)
    raise AssertionError("the fit never finished")


@pytest.fixture(scope="module")
def captured(i2p, tmp_path_factory):
    """24 training + 2 held-out views at 48x48 of two coloured primitives."""
    out = tmp_path_factory.mktemp("nerf_capture")
    build_scene(samples=4)
    set_capture(bpy.context.scene, views=24, test_views=2, resolution=48, samples=4)
    assert bpy.ops.image2points.capture_views(directory=str(out)) == {"FINISHED"}
    return out


def test_fit_render_points_round_trip(captured, backend):
    ctx = bpy.context
    state = ctx.window_manager.image2points
    state.nerf_model_id = ""
    ctx.scene.image2points.nerf_field = "fast"
    stub = FitStub(backend.endpoint, str(captured), minutes=0.35)
    t0 = time.monotonic()
    assert stub.begin(ctx) == {"RUNNING_MODAL"}, stub.reports
    assert state.nerf_job.running and len(state.nerf_job.job_id) == 32
    assert stub.modal(ctx, "MOUSEMOVE") == {"PASS_THROUGH"}  # the UI stays live
    values: list[float] = []
    outcome = run_ticks(stub, ctx, on_tick=lambda: values.append(state.nerf_job.progress))
    elapsed = time.monotonic() - t0
    assert outcome == {"FINISHED"}, (stub.reports, backend.output()[-3000:])
    assert state.nerf_job.progress_events >= 1 and max(values) > 0.0
    preview = bpy.data.images.get("Image2Points NeRF Preview")  # streamed every few seconds
    assert preview is not None and min(preview.size) > 0
    assert not state.nerf_job.running and state.nerf_model_id and state.nerf_job.error_code == ""
    assert elapsed < 0.35 * 60 + 60
    mid = state.nerf_model_id
    from image2points import addon  # the saved model lands in the user's folder, never in the add-on folder

    assert os.path.getsize(state.nerf_model_file) > 1000
    assert not os.path.abspath(state.nerf_model_file).startswith(
        os.path.dirname(os.path.abspath(addon.__file__)))

    # render the held-out camera into an Image datablock
    test_doc = json.loads((captured / "transforms_test.json").read_text())
    cam = bpy.data.objects["NeRF test_000"]
    for o in ctx.view_layer.objects:
        o.select_set(False)
    cam.select_set(True)
    r = ctx.scene.render
    r.resolution_x = r.resolution_y = 48
    r.resolution_percentage = 100
    assert bpy.ops.image2points.render_nerf(endpoint=backend.endpoint) == {"FINISHED"}
    img = bpy.data.images["NeRF render test_000"]
    assert tuple(img.size) == (48, 48) and img["i2p_model_id"] == mid
    pred = nc.on_white(image_rgba(img))
    gt = nc.on_white(load_rgba(tj.resolve_image(str(captured), test_doc["frames"][0]["file_path"])))
    score = nc.psnr(pred, gt)
    baseline = nc.psnr(np.ones_like(gt), gt)  # all background (white)
    print(f"held-out PSNR {score:.2f} dB vs all-background {baseline:.2f} dB, fit {elapsed:.1f} s")
    assert score > baseline + 5.0
    # a model the backend no longer holds is sent again from the saved file (new id)
    assert bpy.ops.image2points.render_nerf(endpoint=backend.endpoint, model="evicted0") == {"FINISHED"}
    assert state.nerf_model_id not in ("", mid, "evicted0")
    again = nc.on_white(image_rgba(bpy.data.images["NeRF render test_000"]))
    assert nc.psnr(again, pred) > 30  # the same field (saved in half precision)
    mid = state.nerf_model_id

    # points: a point object like any other result, in Blender world coordinates
    ctx.scene.image2points.nerf_max_points = 20_000
    assert bpy.ops.image2points.import_nerf_points(endpoint=backend.endpoint) == {"FINISHED"}
    obj = ctx.view_layer.objects.active
    assert obj["i2p_source"] == "nerf" and obj["i2p_model_id"] == mid
    assert obj["i2p_frame"] == "blender-world" and len(obj["i2p_job"]) == 32
    n = obj["i2p_point_count"]
    assert 100 < n <= 20_000 and len(obj.data.vertices) == n
    from image2points.addon import points

    xyz, rgb = points.world_points(obj)
    lo, hi = np.array(test_doc["aabb"])
    inside = ((xyz >= lo - 0.3) & (xyz <= hi + 0.3)).all(1).mean()
    assert inside > 0.9  # the points sit on the primitives, not in the viewer frame
    assert rgb is not None and rgb.astype(float).std(0).max() > 20  # red and blue, not one colour
    assert (rgb[:, 0].astype(int) - rgb[:, 2]).max() > 60 and (rgb[:, 2].astype(int) - rgb[:, 0]).max() > 60


def test_cancel_stops_a_fit_and_the_next_job_works(captured, backend):
    ctx = bpy.context
    state = ctx.window_manager.image2points
    stub = FitStub(backend.endpoint, str(captured), minutes=5.0)
    assert stub.begin(ctx) == {"RUNNING_MODAL"}, stub.reports
    deadline = time.monotonic() + 60
    while state.nerf_job.progress_events < 1 and time.monotonic() < deadline:
        assert stub.modal(ctx) == {"PASS_THROUGH"}
        time.sleep(0.05)
    assert bpy.ops.image2points.cancel_nerf() == {"FINISHED"}
    assert state.nerf_job.stage == "cancelling"
    t0 = time.monotonic()
    assert run_ticks(stub, ctx, limit=10) == {"CANCELLED"}
    assert time.monotonic() - t0 < 2.0
    assert state.nerf_job.status == "Cancelled" and not state.nerf_job.running and state.nerf_job.error_code == ""
    assert any(level == {"WARNING"} and "CANCELLED" in msg for level, msg in stub.reports)
    # the backend really stopped: a short blocking fit gets its turn at once
    t0 = time.monotonic()
    assert bpy.ops.image2points.fit_nerf(endpoint=backend.endpoint, dataset=str(captured),
                                         steps=30, timeout=120) == {"FINISHED"}
    assert time.monotonic() - t0 < 60 and state.nerf_model_id


def test_a_reconstruction_during_a_fit_both_finish(captured, backend, tmp_path):
    """Both modal jobs poll at once; neither may swallow the other's progress or result.

    The fit is ticked three times per reconstruct tick, so on a socket shared by the two jobs the
    fit's polls would take the reconstruction's answer (and heartbeats) and throw it away.
    """
    from images import disc_rgba, png_bytes

    from image2points.addon import reconstruct

    ctx = bpy.context
    state = ctx.window_manager.image2points
    path = tmp_path / "disc.png"
    path.write_bytes(png_bytes(disc_rgba(96)))
    s = ctx.scene.image2points
    s.source, s.filepath, s.density = "FILE", str(path), 10_000
    n_before = len([o for o in bpy.data.objects if "i2p_point_count" in o])
    fit = FitStub(backend.endpoint, str(captured), minutes=0.25)
    rec = OperatorStub(reconstruct.IMAGE2POINTS_OT_reconstruct, backend.endpoint, 240.0)
    assert fit.begin(ctx) == {"RUNNING_MODAL"}, fit.reports
    assert rec.begin(ctx) == {"RUNNING_MODAL"}, rec.reports
    outcomes: dict[str, set[str]] = {}
    deadline = time.monotonic() + 180
    while len(outcomes) < 2 and time.monotonic() < deadline:
        for _ in range(3):
            if "fit" not in outcomes and (o := fit.tick(ctx)) != {"RUNNING_MODAL"}:
                outcomes["fit"] = o
        if "rec" not in outcomes and (o := rec.tick(ctx)) != {"RUNNING_MODAL"}:
            outcomes["rec"] = o
        time.sleep(0.02)
    assert outcomes == {"fit": {"FINISHED"}, "rec": {"FINISHED"}}, (fit.reports, rec.reports)
    assert state.nerf_model_id and state.job.error_code == "" and state.nerf_job.error_code == ""
    assert len([o for o in bpy.data.objects if "i2p_point_count" in o]) == n_before + 1


def test_fit_without_a_dataset_is_a_clear_error(i2p, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with pytest.raises(RuntimeError, match="BAD_INPUT"):
        bpy.ops.image2points.fit_nerf(endpoint="tcp://127.0.0.1:1", dataset=str(tmp_path))
    state = bpy.context.window_manager.image2points
    assert state.nerf_job.error_code == "BAD_INPUT" and "transforms" in state.nerf_job.error_message
    assert math.isfinite(state.nerf_job.progress)


class Recorder:
    """A UILayout stand-in that records every call (the bpy module has no UI to draw into)."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, args, kwargs))
            return self
        return call


def test_nerf_panel_draws_state_without_io(i2p, monkeypatch):
    from image2points.addon import connection, nerf_render, ui

    for mod, name in ((connection, "get_client"), (connection, "new_client"), (nerf_render, "get_client")):
        monkeypatch.setattr(mod, name, lambda *a: pytest.fail("draw() used the network"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    state = bpy.context.window_manager.image2points

    def ops_drawn():
        log: list = []
        ui.IMAGE2POINTS_PT_nerf.draw(SimpleNamespace(layout=Recorder(log)), bpy.context)
        return log, {args[0] for name, args, _ in log if name == "operator"}

    log, ops = ops_drawn()
    assert {"image2points.capture_views", "image2points.import_transforms", "image2points.fit_nerf",
            "image2points.render_nerf", "image2points.import_nerf_points"} <= ops
    state.nerf_job.running, state.nerf_job.progress, state.nerf_job.stage = True, 0.3, "training step 40"
    state.nerf_job.error_code, state.nerf_job.error_message = "MODEL", "y" * 300
    log, ops = ops_drawn()
    assert "image2points.cancel_nerf" in ops and "image2points.fit_nerf" not in ops
    assert any(n == "progress" and kw.get("factor") == pytest.approx(0.3) for n, _, kw in log)
    assert any(n == "label" and "[MODEL]" in kw.get("text", "") for n, _, kw in log)
    state.nerf_job.running, state.nerf_job.error_code = False, ""
