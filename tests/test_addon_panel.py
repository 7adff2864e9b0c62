"""What the panel tells an artist: every property has a tooltip, operator tooltips are one line,
the Check Backend button says so, and a successful check clears a stale error."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.bpy


def addon_classes():
    import importlib

    from image2points import addon

    for name in addon._MODULE_NAMES:
        yield from importlib.import_module(f"addon.{name}").CLASSES


def test_every_property_has_a_description(i2p):
    bpy = i2p
    groups = [c for c in addon_classes()
              if issubclass(c, (bpy.types.PropertyGroup, bpy.types.AddonPreferences))]
    assert len(groups) >= 3
    missing = []
    for cls in groups:
        for prop in cls.bl_rna.properties:
            if prop.identifier in {"rna_type", "name", "bl_idname"}:  # Blender's own
                continue
            if not prop.description.strip():
                missing.append(f"{cls.__name__}.{prop.identifier}")
    assert not missing, f"no tooltip: {missing}"


def test_operator_tooltips_are_one_line_and_angles_are_degrees(i2p):
    bpy = i2p
    ops = [c for c in addon_classes() if issubclass(c, bpy.types.Operator)]
    assert ops
    for cls in ops:
        module, name = cls.bl_idname.split(".")
        text = getattr(getattr(bpy.ops, module), name).get_rna_type().description
        assert text.strip() and "\n" not in text, (cls.__name__, text)
    from image2points.addon import props

    elevation = props.IMAGE2POINTS_PG_settings.bl_rna.properties["view_elevation"]
    assert "°" in elevation.name and "degrees" in elevation.description


def test_check_backend_button_has_its_name_and_success_clears_errors(i2p, backend):
    bpy = i2p
    from types import SimpleNamespace

    from test_addon_bpy import Recorder

    from image2points.addon import ui

    bpy.ops.wm.read_factory_settings(use_empty=True)
    log: list = []
    ui.IMAGE2POINTS_PT_main.draw(SimpleNamespace(layout=Recorder(log)), bpy.context)
    assert ("operator", ("image2points.check_backend",), {"text": "Check Backend",
                                                          "icon": "FILE_REFRESH"}) in log
    state = bpy.context.window_manager.image2points
    with pytest.raises(RuntimeError):
        bpy.ops.image2points.check_backend(endpoint="tcp://127.0.0.1:99999", connect_timeout=0.2)
    assert "ports are 1-65535" in state.backend_status and not state.backend_ok
    state.job.error_code, state.job.error_message = "UNREACHABLE", "stale"
    assert bpy.ops.image2points.check_backend(endpoint=f"  {backend.endpoint}\t",
                                              connect_timeout=10) == {"FINISHED"}
    assert state.backend_ok and state.job.error_code == "" and state.job.error_message == ""


def test_preferences_draw_shows_advanced_and_install_state(i2p, tmp_path):
    import sys
    from types import SimpleNamespace

    from test_addon_bpy import Recorder

    from image2points.addon import backend_install, preferences

    def draw(**over):
        log: list = []
        fake = SimpleNamespace(**{"layout": Recorder(log), "endpoint": "tcp://127.0.0.1:99999 ",
                                  "show_advanced": False, **over})
        preferences.IMAGE2POINTS_AP_preferences.draw(fake, i2p.context)
        return log

    def props(log):
        return [args[1] for name, args, _ in log if name == "prop"]

    def texts(log):
        return [kw.get("text", "") for name, _, kw in log if name == "label"]

    log = draw()
    assert "connect_timeout" not in props(log) and "show_advanced" in props(log)
    assert any("ports are 1-65535" in t for t in texts(log))
    assert any(name == "operator" and args[0] == "image2points.install_backend" for name, args, _ in log)
    assert {"connect_timeout", "server_key_file", "backend_pip_args"} <= set(props(draw(show_advanced=True)))
    task = backend_install.InstallTask(
        [backend_install.Step("installing PyTorch", [sys.executable, "-c", "import time; time.sleep(30)"])],
        str(tmp_path / "install.log"))
    task.begin()
    preferences._install = task
    try:
        log = draw()
        assert any(name == "operator" and args[0] == "image2points.cancel_install" for name, args, _ in log)
        assert any(name == "progress" for name, _, _ in log)
    finally:
        task.stop()
        preferences._install = None
