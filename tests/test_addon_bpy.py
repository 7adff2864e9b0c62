"""The add-on's operators, panel and preferences on the real bpy wheel, against a real backend.

Timers never fire in the bpy module, so the modal path is driven by calling the operator's
``begin()``/``tick()`` directly (what ``invoke()``/``modal()`` do); ``execute()`` is the blocking
path scripts use. Reconstruct tests answer a MODEL error until the default checkpoint is shipped.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from images import disc_rgba, png_bytes
from opstub import OperatorStub

pytestmark = pytest.mark.bpy

PROVENANCE = ("i2p_source_image", "i2p_source_sha256", "i2p_backend_version", "i2p_model",
              "i2p_job", "i2p_frame", "i2p_point_count")


@pytest.fixture
def scene(i2p, tmp_path):
    """An empty scene whose Image2Points source is a small PNG file."""
    bpy = i2p
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = tmp_path / "disc.png"
    path.write_bytes(png_bytes(disc_rgba(96)))
    s = bpy.context.scene.image2points
    s.source, s.filepath, s.density = "FILE", str(path), 10_000
    s.output_dir = str(tmp_path / "out") + os.sep
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    threads = threading.active_count()
    yield bpy
    assert threading.active_count() == threads, "the add-on must never start a Python thread"


def point_objects(bpy):
    return [o for o in bpy.data.objects if "i2p_point_count" in o]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpStub(OperatorStub):
    """Stands in for the reconstruct operator instance."""

    def __init__(self, endpoint: str, timeout: float = 180.0):
        from image2points.addon import reconstruct

        super().__init__(reconstruct.IMAGE2POINTS_OT_reconstruct, endpoint, timeout)


def run_ticks(stub: OpStub, ctx, limit: float = 180.0, on_tick=None, modal=False) -> set[str]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        outcome = stub.modal(ctx) if modal else stub.tick(ctx)
        if on_tick is not None:
            on_tick()
        if outcome not in ({"RUNNING_MODAL"}, {"PASS_THROUGH"}):
            return outcome
        time.sleep(0.02)
    raise AssertionError("the modal path never finished")


# -- reconstruct -----------------------------------------------------------------------------------

def test_execute_imports_object_with_provenance(scene, backend):
    bpy = scene
    bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180)
    objs = point_objects(bpy)
    assert len(objs) == 1
    obj = objs[0]
    for key in PROVENANCE:
        assert key in obj, key
    assert len(obj["i2p_source_sha256"]) == 64 and len(obj["i2p_job"]) == 32
    assert obj["i2p_source_image"] == "disc.png"
    assert len(obj.data.vertices) == obj["i2p_point_count"] > 100
    assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
    assert bpy.context.view_layer.objects.active == obj
    state = bpy.context.window_manager.image2points
    assert not state.job.running and state.job.error_code == "" and "Imported" in state.job.status
    assert state.backend_ok and "Connected" in state.backend_status
    # asset-ready without further steps
    bpy.ops.image2points.mark_asset()
    assert obj.asset_data is not None and "Image2Points" in obj.asset_data.tags
    assert obj["i2p_job"] in obj.asset_data.description


def test_modal_path_by_ticks_from_an_image_datablock(scene, backend, tmp_path):
    bpy = scene
    path = tmp_path / "disc2.png"
    path.write_bytes(png_bytes(disc_rgba(80, (40, 90, 200))))
    s = bpy.context.scene.image2points
    s.source, s.image = "IMAGE", bpy.data.images.load(str(path))
    stub = OpStub(backend.endpoint)
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}
    state = bpy.context.window_manager.image2points
    assert state.job.running and len(state.job.job_id) == 32
    assert stub.modal(bpy.context, "MOUSEMOVE") == {"PASS_THROUGH"}  # the UI stays live
    stages = []
    outcome = run_ticks(stub, bpy.context, on_tick=lambda: stages.append(state.job.stage), modal=True)
    assert outcome == {"FINISHED"}, stub.reports
    assert stages[-1] == "done" and len(set(stages)) >= 2  # progress stages, then done
    assert not state.job.running and state.job.progress == 1.0
    (obj,) = point_objects(bpy)
    assert obj["i2p_source_image"] == "disc2.png"
    assert any("imported" in msg for _, msg in stub.reports)


def test_cancel_mid_job_leaves_nothing_and_next_job_succeeds(scene, backend):
    bpy = scene
    before = set(bpy.data.objects.keys()), len(bpy.data.meshes)
    stub = OpStub(backend.endpoint)
    assert stub.begin(bpy.context) == {"RUNNING_MODAL"}  # submitted: the backend is on it
    bpy.ops.image2points.cancel()  # the next tick acts on it, even if the result is already in
    assert bpy.context.window_manager.image2points.job.stage == "cancelling"
    assert run_ticks(stub, bpy.context) == {"CANCELLED"}
    assert (set(bpy.data.objects.keys()), len(bpy.data.meshes)) == before
    state = bpy.context.window_manager.image2points
    assert state.job.status == "Cancelled" and not state.job.running and state.job.error_code == ""
    assert any(level == {"WARNING"} and "CANCELLED" in msg for level, msg in stub.reports)
    # the same client (and backend) serves the next job; a late answer to the old one is ignored
    bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180)
    assert len(point_objects(bpy)) == 1


def test_backend_down_is_a_coded_error_within_the_timeout(scene):
    bpy = scene
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        bpy.ops.image2points.reconstruct(endpoint=endpoint, connect_timeout=0.8)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.8 + 1.5
    assert "[UNREACHABLE]" in str(err.value) and "image2points serve" in str(err.value)
    state = bpy.context.window_manager.image2points
    assert state.job.error_code == "UNREACHABLE" and "not reachable" in state.job.error_message
    assert state.backend_status == f"Not reachable at {endpoint}. Start it with: image2points serve"
    assert not state.job.running and not point_objects(bpy)
    with pytest.raises(RuntimeError, match="UNREACHABLE"):
        bpy.ops.image2points.check_backend(endpoint=endpoint, connect_timeout=0.3)


def test_non_loopback_endpoint_needs_online_access(scene):
    bpy = scene
    assert bpy.app.online_access is False  # the bpy module's default
    with pytest.raises(RuntimeError) as err:
        bpy.ops.image2points.check_backend(endpoint="tcp://192.0.2.7:5555", connect_timeout=5)
    assert "[OFFLINE]" in str(err.value) and "Allow Online Access" in str(err.value)
    from image2points.addon import preferences

    assert preferences.endpoint_allowed("tcp://localhost:5555")[0]
    assert preferences.endpoint_allowed("tcp://127.0.0.5:1")[0]
    assert not preferences.endpoint_allowed("http://127.0.0.1:5555")[0]


def test_missing_image_is_a_clear_error(scene):
    bpy = scene
    bpy.context.scene.image2points.source = "IMAGE"
    with pytest.raises(RuntimeError, match=r"\[BAD_INPUT\] no input image"):
        bpy.ops.image2points.reconstruct(endpoint="tcp://127.0.0.1:9", connect_timeout=0.2)


def test_check_backend_reports_the_service(scene, backend):
    bpy = scene
    bpy.ops.image2points.check_backend(endpoint=backend.endpoint)
    line = bpy.context.window_manager.image2points.backend_status
    assert line.startswith("Connected: image2points") and "protocol v1" in line and "cpu" in line


# -- results: views, PLY, assets -----------------------------------------------------------------

def torus_object(bpy, n=4000):
    from image2points.addon import points

    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, 2 * np.pi, (2, n))
    xyz = np.stack([(0.7 + 0.25 * np.cos(v)) * np.cos(u), 0.25 * np.sin(v),
                    (0.7 + 0.25 * np.cos(v)) * np.sin(u)], 1).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    obj = points.import_reconstruction("torus", xyz, rgb, size=2.0, radius=0.03,
                                       location=(0.5, -1.0, 0.25), provenance={"job": "j" * 32})
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


def test_render_views_writes_pngs_and_contact_sheet(scene, tmp_path):
    bpy = scene
    torus_object(bpy)
    s = bpy.context.scene.image2points
    s.view_count, s.view_resolution, s.view_samples, s.view_engine = 3, 48, 2, "CYCLES"
    engine_before = bpy.context.scene.render.engine
    bpy.ops.image2points.render_views()
    out = tmp_path / "out" / "torus"
    views = sorted(out.glob("torus_view_*.png"))
    assert len(views) == 3 and all(p.stat().st_size > 500 for p in views)
    sheet = out / "torus_contact_sheet.png"
    assert sheet.stat().st_size > 500
    img = bpy.data.images[sheet.name]
    assert tuple(img.size) == (96, 96)  # 2 x 2 grid of 48 px views
    px = np.empty(96 * 96 * 4, np.float32)
    img.pixels.foreach_get(px)
    assert px.reshape(96, 96, 4)[48:, :48, :3].std() > 0.01  # the first view (top-left) has content
    assert all(p.name in bpy.data.images for p in views)
    assert bpy.context.scene.render.engine == engine_before  # the artist's settings are restored
    assert sum(1 for o in bpy.data.objects if o.type == "CAMERA") == 3
    bpy.ops.image2points.render_views()  # re-running replaces the ring instead of adding to it
    assert sum(1 for o in bpy.data.objects if o.type == "CAMERA") == 3


def test_export_ply_has_world_points_and_colours(scene, tmp_path):
    bpy = scene
    from image2points.addon import ply_export, points

    obj = torus_object(bpy)
    path = tmp_path / "torus.ply"
    bpy.ops.image2points.export_ply(filepath=str(path))
    v = ply_export.read_ply_vertices(str(path))
    assert {"x", "y", "z", "red", "green", "blue"} <= set(v.dtype.names)
    xyz, rgb = points.world_points(obj)
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], 1), xyz, atol=1e-4)
    assert np.abs(np.stack([v["red"], v["green"], v["blue"]], 1).astype(int) - rgb).max() <= 2
    assert ply_export.export_ply(bpy.context, obj, str(tmp_path / "again.ply")) in {"blender", "image2points"}


def test_mark_asset_needs_no_further_steps(scene):
    bpy = scene
    obj = torus_object(bpy)
    bpy.ops.image2points.mark_asset()
    assert obj.asset_data is not None
    assert {"Image2Points", "point cloud"} <= {t.name for t in obj.asset_data.tags}
    assert "4000 points" in obj.asset_data.description


def test_generated_image_is_sent_as_its_pixels(scene):
    """A datablock with no file behind it (generated or painted) goes out as a PNG of its pixels."""
    import io

    from PIL import Image

    from image2points.addon import image_input

    bpy = scene
    img = bpy.data.images.new("painted", 24, 16, alpha=True)
    px = np.zeros((16, 24, 4), np.float32)
    px[..., 0], px[..., 3] = np.linspace(0, 1, 24)[None, :], 1.0
    px[:8, :, 2] = 1.0  # bottom half blue in Blender's bottom-up rows
    img.pixels.foreach_set(px.ravel())
    data = image_input.image_png(img)
    got = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert got.shape == (16, 24, 4)
    assert got[-1, 0, 2] == 255 and got[0, 0, 2] == 0  # rows flipped to top-first
    assert abs(int(got[0, -1, 0]) - 255) <= 1 and got[0, 0, 0] == 0


@pytest.mark.parametrize("fmt,ext", [("TIFF", "tif"), ("BMP", "bmp")])
def test_formats_blender_opens_are_sent_as_png(scene, fmt, ext, tmp_path):
    """The backend decodes PNG, JPEG and WebP; a TIFF or BMP is decoded by Blender and sent as a
    PNG of the same pixels, from the File source and from an Image datablock alike."""
    import io

    from PIL import Image

    from image2points.addon import image_input

    bpy = scene
    rgba = disc_rgba(40, (30, 160, 90))
    path = tmp_path / f"disc.{ext}"
    if fmt == "BMP":  # a BMP's fourth channel means nothing to most readers: an RGB disc on white
        Image.fromarray(np.where(rgba[..., 3:] > 0, rgba, 255)[..., :3].astype(np.uint8)).save(path)
    else:
        Image.fromarray(rgba).save(path, format=fmt)
    n_images = len(bpy.data.images)
    data = image_input.file_png(str(path))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(bpy.data.images) == n_images  # no leftover Image
    got = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    want = np.asarray(Image.open(path).convert("RGBA"))
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    img = bpy.data.images.load(str(path))
    assert image_input.image_png(img) == data
    png = tmp_path / "disc.png"
    png.write_bytes(png_bytes(rgba))
    sent = Image.open(io.BytesIO(image_input.file_png(str(png))))  # decoded by Blender too
    assert np.array_equal(np.asarray(sent.convert("RGBA")), rgba)
    junk = tmp_path / "notes.tif"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(image_input.BackendError, match="not an image Blender can read"):
        image_input.file_png(str(junk))
    assert len(bpy.data.images) == n_images + 1  # only the Image this test loaded itself


def test_a_tiff_reconstructs_like_a_png(scene, backend, tmp_path):
    from PIL import Image

    bpy = scene
    path = tmp_path / "disc.tif"
    Image.fromarray(disc_rgba(96)).save(path, format="TIFF")
    bpy.context.scene.image2points.filepath = str(path)
    assert bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180) == {"FINISHED"}
    (obj,) = point_objects(bpy)
    assert obj["i2p_source_image"] == "disc.tif" and obj["i2p_point_count"] > 100


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1", "tcp://127.0.0.1:notaport", "localhost:5555",
                                      "tcp://*:5555", "tcp://:5555"])
def test_a_malformed_endpoint_is_a_bad_input_error_not_a_traceback(scene, endpoint):
    bpy = scene
    for op in (bpy.ops.image2points.check_backend, bpy.ops.image2points.reconstruct):
        with pytest.raises(RuntimeError, match=r"\[BAD_INPUT\] '.*'") as err:
            op(endpoint=endpoint, connect_timeout=0.2)
        assert "tcp://HOST:PORT" in str(err.value) or "bind" in str(err.value)
    state = bpy.context.window_manager.image2points
    assert state.job.error_code == "BAD_INPUT" and not state.job.running


def test_radius_setting_drives_selected_objects(scene):
    bpy = scene
    from image2points.addon import points

    obj = torus_object(bpy)
    from image2points.addon import props

    bpy.context.scene.image2points.radius = 0.05
    props.radius_changed(bpy.context)  # what the message bus calls in Blender (no event loop here)
    mod = obj.modifiers[points.MODIFIER]
    assert mod[points._socket_id(mod, "Radius")] == pytest.approx(0.05)  # size 2 m: object scale 1


# -- panel, preferences, local backend ------------------------------------------------------------

class Recorder:
    """A UILayout stand-in that records every call (the bpy module has no UI to draw into)."""

    def __init__(self, log=None):
        self.log = log if log is not None else []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, args, kwargs))
            return self
        return call


class Exploding:
    def __getattr__(self, name):
        raise RuntimeError("layout exploded")


def draw_all(ctx, layout):
    from image2points.addon import ui

    for panel in ui.CLASSES:
        panel.draw(SimpleNamespace(layout=layout), ctx)


def test_panel_draw_never_raises_or_touches_the_network(scene, monkeypatch):
    bpy = scene
    from image2points.addon import connection

    for name in ("get_client", "new_client"):
        monkeypatch.setattr(connection, name, lambda *a: pytest.fail("draw() used the network"))
    state = bpy.context.window_manager.image2points
    log: list = []
    draw_all(bpy.context, Recorder(log))
    assert any(name == "operator" and args[0] == "image2points.reconstruct" for name, args, _ in log)
    state.job.running, state.job.progress, state.job.stage = True, 0.42, "fusing"
    state.job.error_code, state.job.error_message = "MODEL", "x" * 500
    state.backend_status = "Not reachable at tcp://127.0.0.1:5555. Start it with: image2points serve"
    log.clear()
    draw_all(bpy.context, Recorder(log))
    assert any(name == "progress" and kw.get("factor") == pytest.approx(0.42) for name, _, kw in log)
    assert any(name == "operator" and args[0] == "image2points.cancel" for name, args, _ in log)
    assert any(name == "label" and "[MODEL]" in kw.get("text", "") for name, _, kw in log)
    torus_object(bpy)
    for s in ("IMAGE", "FILE", "EDITOR"):
        bpy.context.scene.image2points.source = s
        draw_all(bpy.context, Recorder())
    draw_all(SimpleNamespace(), Recorder())  # no scene, no window manager
    draw_all(bpy.context, Exploding())  # even a broken layout does not raise
    state.job.running, state.job.error_code = False, ""


def test_preferences_defaults_without_an_installed_extension(scene):
    from image2points.addon import preferences

    cfg = preferences.settings(scene.context)
    assert cfg.endpoint == "tcp://127.0.0.1:5555" and cfg.connect_timeout > 0
    assert preferences.load_curve(cfg) is None
    assert os.path.isdir(preferences.keys_dir())


def test_local_backend_is_a_subprocess_stopped_on_unregister(scene, tmp_path):
    from image2points.addon import preferences

    ready = tmp_path / "port"
    cmd = (f'"{sys.executable}" -m image2points.backend.cli serve --port 0 --threads 1 --lazy '
           f'--ready-file "{ready}"')
    proc = preferences.start_local_backend(cmd)
    unregistered = False
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), preferences.local_backend_status()
        assert "running" in preferences.local_backend_status()
        scene.ops.image2points.check_backend(endpoint=f"tcp://127.0.0.1:{int(ready.read_text())}")
        assert scene.context.window_manager.image2points.backend_ok
        preferences.unregister()  # what disabling the add-on does
        unregistered = True
        assert proc.poll() is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        if unregistered:
            preferences.register()
