"""Photo-like composites (deterministic, with true masks) and the eval-mask report."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bpy", reason="the composites use the studio-light HDRIs inside the bpy wheel")


def test_composites_are_deterministic_photos_with_true_masks():
    from image2points.backend.data.photos import make_photo

    a, b = make_photo("eval", 3, (96, 128)), make_photo("eval", 3, (96, 128))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.image.dtype == np.uint8 and a.image.shape[:2] == a.mask.shape
    assert 0.01 < a.mask.mean() < 0.6
    assert a.family in {"rock", "capsule", "ring", "dumbbell"}  # odd eval images: never-trained shapes
    inside = a.image[a.mask].astype(float).mean(0)
    outside = a.image[~a.mask].astype(float).mean(0)
    assert np.abs(inside - outside).max() > 3  # the object is not the background


def test_eval_mask_reports_every_method_in_one_run(capsys):
    from image2points.backend.cli import main

    assert main(["eval-mask", "--n", "3", "--size", "96", "128"]) == 0
    out = capsys.readouterr().out
    for name in ("segment (shipped)", "grabcut (prior)", "border rule (old)"):
        assert name in out
    assert "mean IoU" in out and "bar (mean IoU >= 0.9" in out
    assert main(["eval-mask", "--n", "0"]) == 2


def test_training_composites_zoom_in_on_the_object_and_keep_image_and_mask_aligned():
    from image2points.backend.segment_train import make_arrays

    x0, y0 = make_arrays(6, (120, 160), start=3, zoom=0.0)
    x1, y1 = make_arrays(6, (120, 160), start=3, zoom=1.0)
    assert x0.shape == x1.shape == (6, 128, 128, 3) and y0.dtype == np.uint8
    cover0, cover1 = (y0 > 127).mean((1, 2)), (y1 > 127).mean((1, 2))
    zoomed = (y0 != y1).any((1, 2))
    assert zoomed.sum() >= 2  # big objects: the square would not fit, the composite stays whole
    np.testing.assert_array_equal(x0[~zoomed], x1[~zoomed])
    # a square of 1.3-2.2x the object's box: a close-up
    assert (cover1[zoomed] > 1.2 * cover0[zoomed]).all() and (cover1[zoomed] < 0.7).all()
    # image and mask cropped alike: the pixels the mask marks differ in colour from the rest
    for x, y in ((x0, y0), (x1, y1)):
        inside = x[y > 200].mean(0)
        outside = x[y < 50].mean(0)
        assert np.abs(inside - outside).max() > 5
