"""The panel side of photos: a mask image overrides the cut, the cut-out used comes back as a
preview image, a doubtful cut is a warning in the panel, status bar and provenance, and the
'Refuse Doubtful Cut-outs' preference turns it into an error."""

from __future__ import annotations

import numpy as np
import pytest
from images import encoded, inseparable_photo, photo_like

pytestmark = pytest.mark.bpy


@pytest.fixture
def scene(i2p, tmp_path):
    bpy = i2p
    bpy.ops.wm.read_factory_settings(use_empty=True)
    s = bpy.context.scene.image2points
    s.source, s.density = "IMAGE", 10_000
    return bpy


def load(bpy, tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return bpy.data.images.load(str(p))


def test_dimmed_preview_keeps_the_object_and_darkens_the_rest():
    from image2points.addon.cutout import dimmed

    rgba = np.full((40, 60, 4), 200, np.uint8)
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 10:20] = 255
    out = dimmed(m, rgba)
    assert out.shape == (20, 30, 4) and out[10, 15, 0] == 200 and out[1, 1, 0] == 50
    assert dimmed(m, None, side=10).shape == (7, 10, 4)  # no input: the mask, scaled down


def test_mask_override_preview_and_warning(scene, backend, tmp_path):
    bpy = scene
    s = bpy.context.scene.image2points
    state = bpy.context.window_manager.image2points
    s.image = load(bpy, tmp_path, "closeup.jpg", encoded(inseparable_photo(), "JPEG", quality=92))
    assert bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert "could not be separated" in state.job.warning and "MASK_SUSPECT" in obj["i2p_warnings"]
    assert obj["i2p_mask_source"] == "auto"
    cut = bpy.data.images[state.cutout]
    assert tuple(cut.size) == (256, 192)

    m = np.zeros((240, 320), np.uint8)
    m[60:180, 100:220] = 255
    s.mask_image = load(bpy, tmp_path, "mask.png", encoded(m))
    assert bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert obj["i2p_mask_source"] == "mask" and obj["i2p_warnings"] == "" and state.job.warning == ""
    px = np.asarray(bpy.data.images[state.cutout].pixels[:]).reshape(192, 256, 4)[::-1]
    # the object (inside the given mask) keeps its colours, the rest is dimmed
    assert px[96, 128, 0] > 0.6 and px[20, 20, 0] < 0.3 * px[96, 128, 0]


def test_strict_preference_refuses_a_doubtful_cut(scene, backend, tmp_path, monkeypatch):
    bpy = scene
    from image2points.addon import preferences, props

    monkeypatch.setattr(preferences, "settings", lambda context=None: preferences.Settings(strict_cut=True))
    s = bpy.context.scene.image2points
    s.image = load(bpy, tmp_path, "closeup.jpg", encoded(inseparable_photo(), "JPEG", quality=92))
    with pytest.raises(RuntimeError, match="BAD_INPUT"):
        bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180)
    state = bpy.context.window_manager.image2points
    assert state.job.error_code == "BAD_INPUT" and "could not be separated" in state.job.error_message
    s.image = load(bpy, tmp_path, "photo.jpg", encoded(photo_like(240, 320), "JPEG", quality=92))
    assert bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=180) == {"FINISHED"}
    assert props.job_state(bpy.context).job.warning == ""
