"""PLY io: the add-on's numpy writer (addon/core/plyio.py, Blender has no plyfile) and the backend's
plyfile one (backend/ply.py) behave alike and read each other's files."""

from __future__ import annotations

import numpy as np
import pytest

from image2points.addon.core import plyio
from image2points.backend import ply

WRITERS = pytest.mark.parametrize("mod", [plyio, ply], ids=["core", "backend"])


def _cloud(n: int = 257) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3), dtype=np.uint8)


@WRITERS
def test_roundtrip_keeps_points_and_colours(tmp_path, mod):
    xyz, rgb = _cloud()
    mod.write_ply(tmp_path / "a.ply", xyz, rgb)
    back_xyz, back_rgb = mod.read_ply(tmp_path / "a.ply")
    assert np.array_equal(back_xyz, xyz) and np.array_equal(back_rgb, rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]


@pytest.mark.parametrize("writer, reader", [(ply, plyio), (plyio, ply)], ids=["backend->core", "core->backend"])
def test_files_cross_read_between_backend_and_addon(tmp_path, writer, reader):
    xyz, rgb = _cloud(31)
    writer.write_ply(tmp_path / "x.ply", xyz, rgb, comment="Image2Points frame=test")
    head = (tmp_path / "x.ply").read_bytes().split(b"end_header\n")[0].decode("ascii")
    assert "format binary_little_endian 1.0" in head and "comment Image2Points frame=test" in head
    assert "property float x" in head and "property uchar blue" in head
    back_xyz, back_rgb = reader.read_ply(tmp_path / "x.ply")
    assert back_xyz.dtype == np.float32 and back_rgb.dtype == np.uint8
    assert np.array_equal(back_xyz, xyz) and np.array_equal(back_rgb, rgb)


@WRITERS
def test_failed_write_leaves_old_file_and_no_part(tmp_path, mod):
    """Replacing a folder fails at the rename: the temporary goes, whatever was there stays."""
    (tmp_path / "taken.ply").mkdir()
    with pytest.raises(OSError):
        mod.write_ply(tmp_path / "taken.ply", np.zeros((3, 3)), np.zeros((3, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["taken.ply"]
    assert (tmp_path / "taken.ply").is_dir()


@WRITERS
def test_mismatched_lengths_are_refused_before_touching_disk(tmp_path, mod):
    with pytest.raises(ValueError, match="3 points but 2 colours"):
        mod.write_ply(tmp_path / "x.ply", np.zeros((3, 3)), np.zeros((2, 3)))
    assert list(tmp_path.iterdir()) == []
