"""The cut-out of photos without alpha: automatic, checked (coded warning / --strict), overridable
by a mask, and sent back with the result (CLI, server)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BackendProcess
from images import encoded, inseparable_photo, photo_like, photo_mask
from PIL import Image

from image2points.addon.core.client import BackendError, Client, points_from_result
from image2points.backend.cli import main as cli_main
from image2points.backend.segment import cut_warnings, grabcut, segment


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_automatic_cut_finds_the_object_in_a_photo_with_and_without_the_net():
    from image2points.backend.model import segnet

    assert segnet.default_path().stat().st_size < 5 << 20
    segnet.load()  # weights_only load of the shipped file
    img = photo_like(300, 400)
    for cut in (segment, grabcut):  # shipped; the fallback without weights
        m = cut(img)
        assert iou(m > 0.5, photo_mask(300, 400)) > 0.95, cut.__name__
        assert cut_warnings(m) == []


def test_warnings_say_what_looks_wrong():
    full = np.ones((100, 100), np.float32)
    (w,) = cut_warnings(full)
    assert w["code"] == "MASK_SUSPECT" and "fills 100% of the frame" in w["message"]
    assert w["message"].endswith("give an image with alpha or a mask")
    tiny = np.zeros((100, 100), np.float32)
    tiny[50, 50] = 1
    assert "only 0.0%" in cut_warnings(tiny)[0]["message"]
    band = np.zeros((100, 100), np.float32)
    band[:60, :] = 1  # touches top, left and right
    assert "3 sides" in cut_warnings(band)[0]["message"]
    dots = np.zeros((100, 100), np.float32)
    for y in range(10, 90, 10):
        for x in range(10, 90, 10):
            dots[y:y + 3, x:x + 3] = 1
    assert "64 separate pieces" in cut_warnings(dots)[0]["message"]


def test_cli_warns_refuses_when_strict_and_takes_a_mask(tmp_path, capsys):
    photo = tmp_path / "closeup.jpg"
    photo.write_bytes(encoded(inseparable_photo(), "JPEG", quality=92))
    out = tmp_path / "o.ply"
    assert cli_main(["reconstruct", str(photo), "-o", str(out), "--save-mask", str(tmp_path / "m.png")]) == 0
    err = capsys.readouterr().err
    assert "warning MASK_SUSPECT" in err and "could not be separated" in err and "% of the frame" in err
    assert out.exists() and np.asarray(Image.open(tmp_path / "m.png")).mean() > 200  # nearly all "object"

    assert cli_main(["reconstruct", str(photo), "-o", str(tmp_path / "s.ply"), "--strict"]) == 2
    assert "BAD_INPUT" in capsys.readouterr().err and not (tmp_path / "s.ply").exists()

    m = np.zeros((240, 320), np.uint8)
    m[60:180, 100:220] = 255
    (tmp_path / "mask.png").write_bytes(encoded(m))
    assert cli_main(["reconstruct", str(photo), "-o", str(out), "--strict", "--mask", str(tmp_path / "mask.png"),
                     "--save-mask", str(tmp_path / "used.png")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "used.png")), m)


def test_mask_travels_both_ways_over_the_wire(backend):
    photo = encoded(photo_like(240, 320), "JPEG", quality=90)
    m = np.zeros((120, 160), np.uint8)  # half size: scaled to the image
    m[30:90, 40:120] = 255
    with Client(backend.endpoint) as c:
        auto = c.wait(c.submit("reconstruct", {"max_points": 2000}, {"image": photo},
                               {"image": "image/jpeg"}), timeout=120)
        given = c.wait(c.submit("reconstruct", {"max_points": 2000}, {"image": photo, "mask": encoded(m)},
                                {"image": "image/jpeg", "mask": "image/png"}), timeout=120)
        warned = c.wait(c.submit("reconstruct", {"max_points": 2000},
                                 {"image": encoded(inseparable_photo(), "JPEG")}, {"image": "image/jpeg"}),
                        timeout=120)
        job = c.submit("reconstruct", {"strict": True}, {"image": encoded(inseparable_photo(), "JPEG")},
                       {"image": "image/jpeg"})
        with pytest.raises(BackendError) as err:
            c.wait(job, timeout=120)
    assert err.value.code == "BAD_INPUT" and "could not be separated" in err.value.message
    assert auto.meta["mask_source"] == "auto" and auto.warnings == []
    assert auto.mask is not None and auto.mask.shape == (240, 320)
    assert iou(auto.mask > 127, photo_mask(240, 320)) > 0.9
    assert given.meta["mask_source"] == "mask"
    want = np.asarray(Image.fromarray(m).resize((320, 240), Image.Resampling.BILINEAR))
    assert np.abs(given.mask.astype(int) - want).max() <= 1
    assert len(points_from_result(given)[0]) > 100
    assert [w["code"] for w in warned.warnings] == ["MASK_SUSPECT"] and warned.mask.mean() > 200


def test_a_24_megapixel_photo_is_scaled_down_and_reconstructed():
    b = BackendProcess()  # the default limits: a camera photo is scaled down, not refused
    try:
        with Client(b.endpoint) as c:
            res = c.wait(c.submit("reconstruct", {"max_points": 3000},
                                  {"image": encoded(Image.fromarray(photo_like(400, 600)).resize(
                                      (6000, 4000), Image.Resampling.BILINEAR), "JPEG", quality=85)},
                                  {"image": "image/jpeg"}), timeout=180)
    finally:
        b.stop()
    assert res.mask.shape == (683, 1024)
    assert len(points_from_result(res)[0]) > 100 and res.warnings == []
    assert iou(res.mask > 127, photo_mask(683, 1024)) > 0.9


def test_zoom_box_is_a_square_around_the_object_inside_the_frame():
    from image2points.backend.segment import zoom_box

    m = np.zeros((240, 320), bool)
    m[100:120, 300:316] = True  # 20 x 16 near the right edge
    r0, r1, c0, c1 = zoom_box(m, 1.5)
    assert r1 - r0 == c1 - c0 == 30  # 1.5 x the longer side
    assert c1 == 320 and r0 <= 100 and r1 >= 120 and c0 <= 300  # shifted inside, box still in it
    assert zoom_box(m, 20.0) == (0, 240, 0, 320)  # would not fit: the whole image
    assert zoom_box(np.zeros((8, 8), bool), 1.5) == (0, 8, 0, 8)


def test_the_zoomed_pass_changes_only_the_object_square_and_cuts_a_small_object():
    from image2points.backend.segment import net_probability, zoom_box

    h, w = 480, 640
    place = dict(scale=0.2, centre=(200 / w, 300 / h))  # the object a fifth of the size: ~1% of the frame
    bg, small = photo_like(h, w, **place), photo_mask(h, w, **place)
    once = net_probability(bg, zoom=None)
    twice = net_probability(bg)
    r0, r1, c0, c1 = zoom_box(once > 0.5, 1.5)
    assert (r1 - r0) < h / 2  # the square is a close-up
    outside = np.ones((h, w), bool)
    outside[r0:r1, c0:c1] = False
    np.testing.assert_array_equal(once[outside], twice[outside])
    assert iou(twice > 0.5, small) > max(iou(once > 0.5, small), 0.95)  # measured 0.94 -> 0.99
    assert iou(segment(bg) > 0.5, small) > 0.85


def test_a_hole_the_net_doubts_is_filled_when_it_shows_the_object_and_kept_when_the_background():
    """A highlight on the object (its own colour) is no opening; a handle's opening (the
    background's colour) is. The net doubts both (p < 0.5); the colours decide."""
    from image2points.backend.segment import _clean

    h, w = 120, 160
    img = photo_like(h, w)
    obj = photo_mask(h, w)
    on_object = np.zeros((h, w), bool)
    on_object[50:58, 60:70] = True  # object-coloured pixels the cut missed
    opening = np.zeros((h, w), bool)
    opening[55:65, 90:100] = True
    img[opening] = (80, 110, 140)  # the background seen through the object
    fg = obj & ~on_object & ~opening
    p = np.where(fg, 0.9, 0.1).astype(np.float32)
    cut = _clean(fg, p, img)
    assert cut[on_object].all()
    assert not cut[opening].any()
    assert not _clean(fg, p)[on_object].any()  # without the picture: the net's word, as before


def test_the_same_photo_is_cut_the_same_way_twice():
    from image2points.backend.data.photos import make_photo

    img = make_photo("tune", 1).image  # GrabCut's k-means and sampling draw random numbers
    first = segment(img)
    np.testing.assert_array_equal(first, segment(img))
