"""The backend on a CUDA device gives the cloud the CPU gives (skipped, and reported, without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import example_image
from PIL import Image

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_reconstruct_on_cuda_matches_cpu():
    from scipy.spatial import cKDTree

    from image2points.backend.model.reconstruct import Reconstructor

    img = np.asarray(Image.open(example_image()).convert("RGBA"))
    clouds = {dev: Reconstructor.load(device=dev).reconstruct([img], density=20_000)[0]
              for dev in ("cpu", "cuda")}
    a, b = clouds["cpu"].xyz, clouds["cuda"].xyz
    assert abs(len(a) - len(b)) <= 0.05 * len(a)
    chamfer = 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())
    assert chamfer < 0.01, chamfer
