"""addon.plyio: the one PLY writer used by the CLI, the batch entry, the add-on and the NeRF points."""

from __future__ import annotations

import numpy as np
import pytest

from image2points.addon.core.plyio import read_ply, write_ply


def test_roundtrip_keeps_points_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(257, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (257, 3), dtype=np.uint8)
    write_ply(tmp_path / "a.ply", xyz, rgb)
    back_xyz, back_rgb = read_ply(tmp_path / "a.ply")
    assert np.array_equal(back_xyz, xyz) and np.array_equal(back_rgb, rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]


def test_failed_write_leaves_old_file_and_no_part(tmp_path):
    """Replacing a folder fails at the rename: the temporary goes, whatever was there stays."""
    (tmp_path / "taken.ply").mkdir()
    with pytest.raises(OSError):
        write_ply(tmp_path / "taken.ply", np.zeros((3, 3)), np.zeros((3, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["taken.ply"]
    assert (tmp_path / "taken.ply").is_dir()


def test_mismatched_lengths_are_refused_before_touching_disk(tmp_path):
    with pytest.raises(ValueError, match="3 points but 2 colours"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), np.zeros((2, 3)))
    assert list(tmp_path.iterdir()) == []
