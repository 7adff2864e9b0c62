import numpy as np
import pytest

from image2points.addon.core import camera


def test_viewer_to_blender_axes():
    pts = np.array([[1, 0, 0], [0, 1, 0], [0, 0, -1]], np.float32)  # right, up, forward (away)
    np.testing.assert_allclose(camera.viewer_to_blender(pts), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])


def test_viewer_to_blender_is_a_rotation():
    m = camera.VIEWER_TO_BLENDER
    np.testing.assert_allclose(m @ m.T, np.eye(3))
    assert np.linalg.det(m) == pytest.approx(1.0)


def test_look_at_points_minus_z_at_target():
    m = camera.look_at(np.array([0, -5, 0]), np.zeros(3))
    forward = -m[:3, 2]
    np.testing.assert_allclose(forward, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(m[:3, 1], [0, 0, 1], atol=1e-12)  # camera up is world Z
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)


def test_ring_poses_first_is_front_and_all_look_at_target():
    tgt = np.array([1.0, 2.0, 3.0])
    poses = camera.ring_poses(6, 4.0, 30.0, tgt)
    assert len(poses) == 6
    assert poses[0][1, 3] < tgt[1]  # first camera at -Y of the target
    for m in poses:
        assert np.linalg.norm(m[:3, 3] - tgt) == pytest.approx(4.0)
        to_target = (tgt - m[:3, 3]) / 4.0
        np.testing.assert_allclose(-m[:3, 2], to_target, atol=1e-9)
        assert m[2, 3] - tgt[2] == pytest.approx(4.0 * np.sin(np.radians(30)))


def test_fit_radius_fits_sphere():
    d = camera.fit_radius(1.0, 50.0, 36.0, margin=1.0)
    half_fov = np.arctan(18 / 50)
    assert np.sin(half_fov) * d == pytest.approx(1.0)
