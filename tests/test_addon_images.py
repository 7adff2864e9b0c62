"""What the add-on sends is the picture as Blender sees it: any format Blender reads, any bit
depth, any size (scaled to the working size on the client), and errors that name the image.
The pixels sent are checked here; test_addon_extension reconstructs the same three kinds of file
through the installed extension zip and a real backend."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.bpy


@pytest.fixture
def scene(i2p, tmp_path):
    bpy = i2p
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.image2points.density = 10_000
    return bpy


def disc(h: int, w: int, inside: float, outside: float) -> np.ndarray:
    """A centred disc (value ``inside``) on a plain background (``outside``), float (h, w)."""
    yy, xx = np.ogrid[:h, :w]
    r = 0.3 * min(h, w)
    return np.where((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r * r, inside, outside)


def sent(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def camera_jpeg(path):
    """A 6000x4000 (24 MP) photo-sized JPEG: an orange disc on blue."""
    grey = disc(400, 600, 0.0, 1.0)
    rgb = np.stack([255 * (1 - grey) * 0.8, 60 + 0 * grey, 255 * grey], -1)
    small = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    small.resize((6000, 4000), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def grey16_png(path):
    """A 16-bit greyscale PNG: a dark disc (0.25) on a light ground (0.85)."""
    Image.fromarray((disc(256, 256, 0.25, 0.85) * 65535).astype(np.uint16)).save(path)
    return path


def write_exr(bpy, path):
    """A linear EXR written by Blender: red-orange disc (0.8, 0.2, 0.05) on (0, 0, 0.05)."""
    h = w = 128
    lin = disc(h, w, 1.0, 0.0)
    img = bpy.data.images.new("made", w, h, alpha=True, float_buffer=True)
    img.colorspace_settings.name = "Non-Color"  # else Image.save() writes display values into the EXR
    px = np.zeros((h, w, 4), np.float32)
    px[..., 0], px[..., 1], px[..., 2], px[..., 3] = 0.8 * lin, 0.2 * lin, 0.05, 1.0
    img.pixels.foreach_set(px.ravel())
    img.filepath_raw, img.file_format = str(path), "OPEN_EXR"
    img.save()
    bpy.data.images.remove(img)
    return path


def test_a_24_megapixel_jpeg_is_scaled_on_the_client(scene, tmp_path):
    from image2points.addon import image_input

    bpy = scene
    path = camera_jpeg(tmp_path / "camera.jpg")
    n = len(bpy.data.images)
    data = image_input.file_png(str(path))
    assert len(bpy.data.images) == n  # the temporary Image is gone
    assert Image.open(io.BytesIO(data)).mode == "RGB"  # opaque: no alpha channel, so no fake mask
    px = sent(data)
    assert px.shape == (683, 1024, 4)  # long side at the working size, aspect kept
    assert image_input.WORKING_SIZE == 1024
    assert px[341, 512, 0] > 150 and px[5, 5, 2] > 200  # the disc and the background survive
    # the same photo as an Image datablock: scaled on a copy, the artist's Image is untouched
    img = bpy.data.images.load(str(path))
    assert sent(image_input.image_png(img)).shape == (683, 1024, 4)
    assert tuple(img.size) == (6000, 4000) and len(bpy.data.images) == n + 1


def test_a_16_bit_grey_png_keeps_its_tones(scene, tmp_path):
    from image2points.addon import image_input

    path = grey16_png(tmp_path / "grey16.png")
    assert Image.open(path).mode.startswith("I")  # really a 16-bit grey PNG
    px = sent(image_input.file_png(str(path))).astype(int)
    assert abs(px[128, 128, 0] - 64) <= 2 and abs(px[3, 3, 0] - 217) <= 2  # not all white
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 3] == 255).all()


def test_an_exr_is_sent_as_display_srgb(scene, tmp_path):
    from image2points.addon import image_input

    bpy = scene
    path = write_exr(bpy, tmp_path / "render.exr")
    got = sent(image_input.file_png(str(path))).astype(int)
    assert abs(got[64, 64, 0] - 231) <= 2 and abs(got[64, 64, 1] - 124) <= 2  # linear 0.8, 0.2 -> sRGB
    assert abs(got[2, 2, 2] - 63) <= 2


def test_errors_name_the_image(scene, backend, tmp_path):
    bpy = scene
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    img = bpy.data.images.load(str(bad))
    s = bpy.context.scene.image2points
    s.source, s.image = "IMAGE", img
    with pytest.raises(RuntimeError) as err:
        bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=60)
    assert "could not read image 'broken.png'" in str(err.value) and "missing" not in str(err.value)
    gone = tmp_path / "gone.png"
    gone.write_bytes(b"")
    img2 = bpy.data.images.load(str(gone), check_existing=False)
    gone.unlink()
    s.image = img2
    with pytest.raises(RuntimeError, match="could not read image 'gone.png': its file .* is missing"):
        bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=60)
    s.source, s.filepath = "FILE", str(bad)
    with pytest.raises(RuntimeError, match="could not read image 'broken.png'"):
        bpy.ops.image2points.reconstruct(endpoint=backend.endpoint, timeout=60)
    state = bpy.context.window_manager.image2points
    assert state.job.error_code == "BAD_INPUT" and "broken.png" in state.job.error_message


def test_a_render_result_says_to_save_it_first(scene):
    from image2points.addon import image_input

    bpy = scene
    r = bpy.context.scene.render
    r.engine, r.resolution_x, r.resolution_y = "CYCLES", 8, 8
    bpy.context.scene.cycles.samples = 1
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    bpy.ops.render.render()
    result = next(i for i in bpy.data.images if i.type == "RENDER_RESULT")
    with pytest.raises(image_input.BackendError, match=r"could not read image 'Render Result'.*Save As"):
        image_input.image_png(result)
