"""The one decoder: photographs' orientation, bit depths, colour models, TIFF, downscaling, errors."""

from __future__ import annotations

import numpy as np
import pytest
from images import bomb_png, encoded, exif_rotated, photo_like, quadrants
from PIL import Image

from image2points.backend.images import WORK_SIDE, decode_image, decode_mask
from image2points.backend.ops import JobError


@pytest.mark.parametrize("fmt,tol", [("PNG", 0), ("JPEG", 12)])
def test_exif_orientation_is_applied(fmt, tol):
    want = quadrants()
    got = decode_image(exif_rotated(want, fmt))
    assert got.shape == want.shape  # upright: 40 high, 60 wide, not on its side
    assert np.abs(got.astype(int) - want).max() <= tol if fmt == "PNG" else \
        np.median(np.abs(got.astype(int) - want)) <= tol


def test_16_bit_grey_png_looks_like_itself():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    got = decode_image(encoded(im))
    assert got.shape == (16, 64, 3)
    want = np.round(ramp / 257.0)
    assert np.abs(got[..., 0].astype(int) - want).max() <= 1
    assert (got[..., 0] == got[..., 2]).all() and got.min() == 0 and got.max() == 255


def test_cmyk_jpeg_decodes_to_its_colours():
    want = quadrants()
    got = decode_image(encoded(Image.fromarray(want).convert("CMYK"), "JPEG", quality=95))
    assert got.shape == want.shape
    assert np.median(np.abs(got.astype(int) - want)) <= 6


def test_tiff_is_accepted_8_and_16_bit():
    want = quadrants()
    assert np.array_equal(decode_image(encoded(want, "TIFF")), want)
    grey16 = Image.fromarray(np.full((8, 8), 32896, np.uint16))  # 128 * 257: mid grey
    got = decode_image(encoded(grey16, "TIFF"), name="scan.tif")
    assert got.shape == (8, 8, 3) and (got == 128).all()


def test_palette_la_and_float_modes():
    pal = Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    got = decode_image(encoded(pal))
    assert got.shape[2] == 4 and set(np.unique(got[..., 3])) <= {0, 255}
    la = Image.merge("LA", [Image.new("L", (5, 4), 90), Image.new("L", (5, 4), 200)])
    got = decode_image(encoded(la))
    assert got.shape == (4, 5, 4) and (got[..., :3] == 90).all() and (got[..., 3] == 200).all()
    f = Image.fromarray(np.full((4, 4), 0.5, np.float32))
    assert (decode_image(encoded(f, "TIFF"))[..., 0] == 128).all()


def test_big_jpeg_is_scaled_down_not_refused():
    want = np.asarray(Image.fromarray(photo_like(400, 600)).resize((6000, 4000), Image.Resampling.BILINEAR))
    got = decode_image(encoded(want, "JPEG", quality=90), max_pixels=10_000_000_000)
    assert got.shape == (683, WORK_SIDE, 3)
    small = np.asarray(Image.fromarray(want).resize((WORK_SIDE, 683), Image.Resampling.BOX))
    assert np.median(np.abs(got.astype(int) - small)) <= 3


def test_bad_inputs_are_coded_and_name_the_blob():
    with pytest.raises(JobError) as e:
        decode_image(b"not an image at all", name="holiday.jpg")
    assert e.value.code == "BAD_INPUT" and "holiday.jpg" in e.value.message and "0x" not in e.value.message
    truncated = encoded(photo_like(200, 300), "JPEG")[:300]
    with pytest.raises(JobError) as e:
        decode_image(truncated, name="cut.jpg")
    assert e.value.code == "BAD_INPUT" and "cut.jpg" in e.value.message and "0x" not in e.value.message
    with pytest.raises(JobError) as e:
        decode_image(bomb_png())
    assert e.value.code == "TOO_LARGE"
    with pytest.raises(JobError) as e:
        decode_image(encoded(quadrants(), "BMP"))
    assert e.value.code == "BAD_INPUT" and "TIFF" in e.value.message


def test_mask_from_grey_or_alpha_resized_to_the_image():
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 10:20] = 255
    got = decode_mask(encoded(m), (40, 60))
    assert got.shape == (40, 60) and got[20, 30] == 1 and got[2, 2] == 0
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:30, 20:40, 3] = 255  # black paint, but a real alpha: alpha wins
    assert decode_mask(encoded(rgba), (40, 60))[20, 30] == 1
    with pytest.raises(JobError, match="shape"):
        decode_mask(encoded(m), (60, 60))
    with pytest.raises(JobError, match="no object"):
        decode_mask(encoded(np.zeros((20, 30), np.uint8)), (40, 60))
