"""Preprocessing: alpha and border-estimate paths, crop, and the training path = inference path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import example_image
from PIL import Image

from image2points.backend.data.dataset import MakeConfig, make_samples
from image2points.backend.model.preprocess import SIZE, from_uint8, preprocess
from image2points.backend.segment import object_alpha


def test_preprocess_alpha_and_border_paths_agree():
    rgba = np.asarray(Image.open(example_image("car.png")).convert("RGBA"))
    white = np.asarray(Image.open(example_image("car_on_white.jpg")).convert("RGB"))
    a, b = preprocess(rgba), preprocess(white)
    assert a.shape == (4, SIZE, SIZE) and a.dtype == np.float32
    ma, mb = a[3] > 0.5, b[3] > 0.5
    assert (ma & mb).sum() / (ma | mb).sum() > 0.9  # the estimated mask matches the real alpha
    # the object is centred and fills the crop up to the margin
    ys, xs = np.nonzero(ma)
    assert abs((ys.min() + ys.max()) / 2 - SIZE / 2) < 3 and abs((xs.min() + xs.max()) / 2 - SIZE / 2) < 3
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) > 0.75 * SIZE


def test_preprocess_rejects_empty_and_bad_input():
    with pytest.raises(ValueError, match="no object"):
        preprocess(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError):
        preprocess(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        preprocess(np.zeros((32, 32, 3), np.float32))
    assert object_alpha(np.full((8, 8, 4), 255, np.uint8)).sum() == 0  # opaque, uniform: nothing



def test_training_inputs_go_through_preprocess_exactly():
    s = make_samples(2_000_007, MakeConfig(views=2, novel=1, surf_points=64, keep_raw=True))
    for raw, cached in zip(s["raw"], s["inp"]):
        np.testing.assert_array_equal(from_uint8(cached), preprocess(raw))


def test_rgb_on_plain_background_matches_rgba_path():
    """Compositing a rendered RGBA onto a flat colour and dropping alpha gives the same input."""
    raw = make_samples(2_000_011, MakeConfig(views=1, novel=1, surf_points=64, keep_raw=True))["raw"][0]
    a = raw[..., 3:].astype(np.float32) / 255
    rgb = (raw[..., :3] * a + np.array([235, 235, 230]) * (1 - a)).round().astype(np.uint8)
    x, y = preprocess(raw), preprocess(rgb)
    iou = ((x[3] > 0.5) & (y[3] > 0.5)).sum() / ((x[3] > 0.5) | (y[3] > 0.5)).sum()
    assert iou > 0.9
