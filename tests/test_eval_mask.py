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
