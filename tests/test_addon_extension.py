"""The built extension: `python -m image2points.addon.build` makes valid per-platform zips; the Linux zip
installs into the bpy wheel with Blender's own installer, enables, and registers every class.

The install runs in a child process with its own BLENDER_USER_RESOURCES so it cannot clash with
the package registered directly by the other add-on tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import pytest
from conftest import ROOT

pytestmark = pytest.mark.bpy

INSTALL = r"""
import json, sys, importlib
import bpy
zip_path, endpoint = sys.argv[1], sys.argv[2]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                         enable_on_install=True)
pkg = "bl_ext.user_default.image2points"
out = {"enabled": pkg in bpy.context.preferences.addons.keys()}
mods = {m: importlib.import_module(f"{pkg}.{m}") for m in ("props", "preferences", "reconstruct", "ui")}
classes = [c for m in mods.values() for c in m.CLASSES]
out["classes"] = [c.__name__ for c in classes]
out["missing"] = [c.__name__ for c in classes if not c.is_registered]
out["ops"] = sorted(n for n in dir(bpy.ops.image2points) if not n.startswith("_"))
out["panels"] = sorted(n for n in dir(bpy.types) if n.startswith("IMAGE2POINTS_PT_"))
out["base_package"] = mods["preferences"].base_package
prefs = bpy.context.preferences.addons[pkg].preferences
out["endpoint_default"] = prefs.endpoint
prefs.endpoint, prefs.connect_timeout = f" {endpoint}\t", 10.0  # pasted with blanks
bpy.ops.image2points.check_backend()  # preferences -> a real hello over the bundled wheel's zmq
out["status"] = bpy.context.window_manager.image2points.backend_status
out["has_scene_props"] = hasattr(bpy.context.scene, "image2points")
out["keys_dir"] = mods["preferences"].keys_dir()
import os
site = os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local", "lib", "python3.11", "site-packages")
out["wheel_installed"] = os.path.isfile(os.path.join(site, "zmq", "__init__.py"))
bpy.ops.preferences.addon_disable(module=pkg)
out["after_disable"] = sorted(n for n in dir(bpy.types) if n.startswith("IMAGE2POINTS_"))
print("RESULT " + json.dumps(out))
"""


UNINSTALL = r"""
import sys
import bpy
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default",
                                         enable_on_install=True)
pkg = "bl_ext.user_default.image2points"
assert pkg in bpy.context.preferences.addons.keys(), "not enabled"
repos = [r.module for r in bpy.context.preferences.extensions.repos]
bpy.ops.extensions.package_uninstall(repo_index=repos.index("user_default"), pkg_id="image2points")
left = [n for n in dir(bpy.types) if n.startswith("IMAGE2POINTS_")]
print("RESULT", pkg in bpy.context.preferences.addons.keys(), left, flush=True)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Built from a read-only copy of the checkout (what a packager or CI may have)."""
    src = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "addon", src / "addon",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("blender_manifest.toml", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for path in [src, *src.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    out = tmp_path_factory.mktemp("dist")
    try:
        res = subprocess.run([sys.executable, "-m", "image2points.addon.build", "--out", str(out)], cwd=src,
                             capture_output=True, text=True, timeout=300)
    finally:
        for path in [src, *src.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (src / "build").exists()
    zips = {p.name.rsplit("-", 1)[-1].removesuffix(".zip"): p for p in out.glob("*.zip")}
    missing = {"linux_x64", "windows_x64", "macos_arm64", "macos_x64"} - set(zips)
    if missing:
        warnings.warn(f"EXTENSION BUILT WITHOUT {sorted(missing)}: pyzmq wheel download failed "
                      f"(see the build log):\n{res.stdout}", stacklevel=1)
    assert "linux_x64" in zips, res.stdout + res.stderr
    return zips, res.stdout


def test_build_makes_valid_platform_zips(built):
    zips, log = built
    assert "valid: staged extension" in log
    with zipfile.ZipFile(zips["linux_x64"]) as z:
        names = set(z.namelist())
        manifest = z.read("blender_manifest.toml").decode()
        licence = z.read("LICENSE").decode()
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 3" in licence
    assert licence == (ROOT / "LICENSE").read_text()
    assert {"__init__.py", "reconstruct.py", "ui.py", "preferences.py", "props.py", "core/client.py",
            "core/protocol.py", "points.py", "blender_manifest.toml"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") or n == "build.py" for n in names)
    wheels = [n for n in names if n.startswith("wheels/")]
    assert len(wheels) == 1 and "manylinux" in wheels[0] and "cp311" in wheels[0]
    assert 'platforms = ["linux-x64"]' in manifest
    if "macos_arm64" in zips:
        with zipfile.ZipFile(zips["macos_arm64"]) as z:
            assert any("universal2" in n for n in z.namelist())


def test_installed_zip_registers_every_class(built, backend, tmp_path):
    zips, _ = built
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    res = subprocess.run([sys.executable, "-c", INSTALL, str(zips["linux_x64"]), backend.endpoint],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout + res.stderr
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["enabled"] and out["base_package"] == "bl_ext.user_default.image2points"
    assert not out["missing"], out
    assert {"reconstruct", "cancel", "check_backend", "render_views", "export_ply",
            "mark_asset"} <= set(out["ops"])
    assert {"IMAGE2POINTS_PT_main", "IMAGE2POINTS_PT_points", "IMAGE2POINTS_PT_views"} <= set(out["panels"])
    assert out["endpoint_default"] == "tcp://127.0.0.1:5555"
    assert out["status"].startswith("Connected: image2points"), out["status"]
    assert out["has_scene_props"]
    assert out["keys_dir"].startswith(str(tmp_path / "blender-user"))  # never the add-on dir
    assert out["after_disable"] == []
    assert out["wheel_installed"], "the bundled pyzmq wheel was not installed"


def test_uninstall_in_session_then_clean_exit(built, tmp_path):
    """package_uninstall inside the session, then a normal interpreter exit: rc 0 (an update=
    callback on a property made the bpy module segfault here, in SpaceType::~SpaceType)."""
    zips, _ = built
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    res = subprocess.run([sys.executable, "-c", UNINSTALL, str(zips["linux_x64"])], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert "RESULT False []" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 0, f"exit code {res.returncode}\n{res.stdout}{res.stderr}"


DEFAULT_SCENE = r"""
import json, os, shutil, sys
import bpy
zip_path, endpoint, image, out = sys.argv[1:5]
bpy.ops.wm.read_factory_settings(use_empty=False)  # the startup scene: Cube, Light, Camera
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                         enable_on_install=True)
prefs = bpy.context.preferences.addons["bl_ext.user_default.image2points"].preferences
prefs.endpoint, prefs.connect_timeout = f" {endpoint}\t", 10.0  # pasted with blanks
scene = bpy.context.scene
cube = scene.objects["Cube"]
s = scene.image2points
s.source, s.filepath = "FILE", image
bpy.ops.image2points.reconstruct()
obj = bpy.context.view_layer.objects.active
view3d = next(a for a in bpy.context.window.screen.areas if a.type == "VIEW_3D")
framed_at = list(view3d.spaces.active.region_3d.view_location)
s.view_count, s.view_resolution, s.view_samples, s.view_engine = 4, 64, 4, "CYCLES"
s.output_dir = os.path.join(out, "renders") + os.sep
scene.cycles.use_denoising = False
def render(tag):
    bpy.ops.image2points.render_views()
    folder = os.path.join(out, tag)
    shutil.copytree(os.path.join(out, "renders", obj.name), folder)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if "_view_" in f)
res = {"with": render("with")}
obj.hide_render = True
res["without"] = render("without")
obj.hide_render = False
def box(o):
    import mathutils
    pts = [o.matrix_world @ mathutils.Vector(c) for c in o.bound_box]
    return [[min(p[i] for p in pts) for i in range(3)], [max(p[i] for p in pts) for i in range(3)]]
bpy.context.view_layer.update()
res.update(cube_box=box(cube), obj_box=box(obj), cube_hide_render=cube.hide_render,
           selected=[o.name for o in bpy.context.selected_objects], obj=obj.name,
           location=list(obj.location), framed_at=framed_at)
print("RESULT " + json.dumps(res))
"""


def test_default_scene_result_is_placed_clear_and_seen_in_every_view(built, backend, tmp_path):
    """The startup Cube (2 m at the origin, where the 3D cursor is) neither swallows the 2 m
    result nor hides it in the novel views."""
    import numpy as np
    from images import disc_rgba, png_bytes
    from PIL import Image

    zips, _ = built
    image = tmp_path / "disc.png"
    image.write_bytes(png_bytes(disc_rgba(96, (40, 200, 60))))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    res = subprocess.run([sys.executable, "-c", DEFAULT_SCENE, str(zips["linux_x64"]),
                          backend.endpoint, str(image), str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout + res.stderr
    out = json.loads(lines[-1][len("RESULT "):])
    cube_min, cube_max = np.array(out["cube_box"])
    obj_min, obj_max = np.array(out["obj_box"])
    assert obj_min[0] > cube_max[0], out  # placed beside the Cube along +X, no overlap
    assert out["location"][1:] == pytest.approx([0.0, 0.0])  # at the cursor's y and z
    assert out["selected"] == [out["obj"]]
    centre = (obj_min + obj_max) / 2
    assert np.allclose(out["framed_at"], centre, atol=0.3 * (obj_max - obj_min).max())  # framed
    assert out["cube_hide_render"] is False  # restored after both renders
    assert len(out["with"]) == len(out["without"]) == 4
    for with_path, without_path in zip(out["with"], out["without"]):
        a = np.asarray(Image.open(with_path).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(without_path).convert("RGB"), dtype=np.int16)
        changed = np.abs(a - b).max(axis=2) > 24
        assert changed.mean() > 0.02, f"{with_path}: the result covers {changed.mean():.1%} of the view"
        greenish = (a[..., 1] - a[..., 0] > 40) & changed  # the disc is green; the Cube is grey
        assert greenish.sum() > 0.5 * changed.sum(), f"{with_path}: the result is not what shows"


INSTALL_BACKEND = r"""
import json, os, subprocess, sys, time
import bpy
zip_path, wheel, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                         enable_on_install=True)
pkg = "bl_ext.user_default.image2points"
prefs = bpy.context.preferences.addons[pkg].preferences
mod = sys.modules[pkg + ".preferences"]
out = {"before": mod.install_status_lines(), "default_package": prefs.backend_package,
       "default_torch": prefs.backend_torch}
try:  # the bpy module starts with online access off: a download is refused at once
    bpy.ops.image2points.install_backend()
    out["offline"] = ""
except RuntimeError as exc:
    out["offline"] = str(exc)
prefs.backend_torch, prefs.backend_pip_args = "NONE", "--no-index --no-deps"  # no network here
prefs.local_command = f"image2points serve --port {port} --threads 1"
prefs.endpoint, prefs.connect_timeout = f"tcp://127.0.0.1:{port}", 10.0
try:
    bpy.ops.image2points.start_backend()
    out["start_before"] = ""
except RuntimeError as exc:
    out["start_before"] = str(exc)
prefs.backend_package = os.path.join(os.path.dirname(wheel), "image2points-0.0.0-py3-none-any.whl")
try:
    bpy.ops.image2points.install_backend()
    out["bad"] = ""
except RuntimeError as exc:
    out["bad"] = str(exc)
prefs.backend_package = wheel
bpy.ops.image2points.install_backend()
out["exe"], out["venv"], out["after"] = mod.installed_exe(), mod.venv_dir(), mod.install_status_lines()
bpy.ops.image2points.start_backend()
deadline = time.monotonic() + 120
while True:
    r = subprocess.run([out["exe"], "ping", "--endpoint", prefs.endpoint, "--timeout", "5"],
                       capture_output=True, text=True)
    if r.returncode == 0 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
out["ping"] = [r.returncode, r.stdout + r.stderr]
bpy.ops.image2points.check_backend()
out["status"] = bpy.context.window_manager.image2points.backend_status
vpy = os.path.join(out["venv"], "bin", "python")
out["backend_file"] = subprocess.run([vpy, "-c", "import image2points.backend as b; print(b.__file__)"],
                                     capture_output=True, text=True).stdout.strip()
bpy.ops.image2points.stop_backend()
print("RESULT " + json.dumps(out))
"""

_NOT_SHARED = ("image2points", "__editable__", "_distutils_hack", "distutils-precedence", "pip",
               "setuptools", "pkg_resources", "wheel", "__pycache__")


@pytest.fixture(scope="module")
def backend_wheel(tmp_path_factory):
    """The backend as a wheel built from this checkout (no network: no build isolation)."""
    src = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("addon", "backend", "bench"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(out)], cwd=src, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = out.glob("image2points-*.whl")
    return wheel


def test_backend_wheel_carries_the_default_weights(backend_wheel):
    with zipfile.ZipFile(backend_wheel) as z:
        names = set(z.namelist())
    assert {"image2points/backend/weights/default.pt", "image2points/backend/weights/default.card.json",
            "image2points/backend/cli.py"} <= names
    assert not any(n.startswith(("backend/", "addon/", "bench/")) for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_install_backend_then_start_it_by_full_path(built, backend_wheel, tmp_path):
    """Install Backend into the extension's user folder from a local wheel (pip --no-index), then
    Start Local Backend finds it without PATH and `image2points ping` answers. The test's own
    packages (torch, numpy, pyzmq, ...) stand in for the downloads, through PYTHONPATH."""
    import sysconfig

    from test_addon_bpy import free_port

    zips, _ = built
    shared = tmp_path / "deps"
    shared.mkdir()
    for entry in os.scandir(sysconfig.get_paths()["purelib"]):
        if not entry.name.startswith(_NOT_SHARED) and not entry.name.endswith(".pth"):
            os.symlink(entry.path, shared / entry.name)
    user = tmp_path / "blender-user"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user), PYTHONPATH=str(shared),
               PATH="/usr/bin:/bin")  # no image2points on PATH
    res = subprocess.run([sys.executable, "-c", INSTALL_BACKEND, str(zips["linux_x64"]),
                          str(backend_wheel), str(free_port())], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout + res.stderr
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["default_package"] == "image2points" and out["default_torch"] == "CPU"
    assert out["before"][0].startswith("Not installed")
    assert "online access is off" in out["offline"] and "--no-index" in out["offline"]
    assert "'image2points' was not found" in out["start_before"] and "Install Backend" in out["start_before"]
    bad = out["bad"]  # one actionable line: what failed, the log, the commands by hand
    assert "installing the backend failed (exit code" in bad and "\n" not in bad.strip()
    assert f"Log: {out['venv'][:-len('venv')]}install.log" in bad and "By hand: " in bad
    assert "pip install" in bad and "image2points-0.0.0" in bad
    assert out["venv"].startswith(str(user)) and "extensions" in out["venv"]  # not the add-on folder
    assert "/addons/" not in out["venv"] and not out["venv"].startswith(str(ROOT))
    assert out["exe"] == os.path.join(out["venv"], "bin", "image2points")
    assert out["after"][-1] == f"Installed: {out['exe']}"
    assert out["ping"][0] == 0, out["ping"]
    assert out["status"].startswith("Connected: image2points"), out["status"]
    assert out["backend_file"].startswith(out["venv"])  # the wheel's backend, not the checkout


IMAGES = r"""
import json, sys
import bpy
zip_path, endpoint, *paths = sys.argv[1:]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                         enable_on_install=True)
prefs = bpy.context.preferences.addons["bl_ext.user_default.image2points"].preferences
prefs.endpoint, prefs.connect_timeout = endpoint, 10.0
s = bpy.context.scene.image2points
s.density = 10_000
out = {}
for path in paths:
    s.source, s.filepath = "FILE", path
    bpy.ops.image2points.reconstruct()
    obj = bpy.context.view_layer.objects.active
    out[obj["i2p_source_image"]] = obj["i2p_point_count"]
print("RESULT " + json.dumps(out))
"""


def test_photo_16_bit_and_exr_files_reconstruct_through_the_installed_zip(built, backend, tmp_path):
    """The three kinds of file the issue names, through Blender's decoding in the real extension."""
    bpy = pytest.importorskip("bpy")
    from test_addon_images import camera_jpeg, grey16_png, write_exr

    zips, _ = built
    paths = [camera_jpeg(tmp_path / "camera.jpg"), grey16_png(tmp_path / "grey16.png"),
             write_exr(bpy, tmp_path / "render.exr")]
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    res = subprocess.run([sys.executable, "-c", IMAGES, str(zips["linux_x64"]), backend.endpoint,
                          *map(str, paths)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout + res.stderr
    counts = json.loads(lines[-1][len("RESULT "):])
    assert set(counts) == {"camera.jpg", "grey16.png", "render.exr"}
    assert all(n > 100 for n in counts.values()), counts
