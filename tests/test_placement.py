"""Where a new result goes (pure logic, no bpy)."""

import pytest

from image2points.addon.core.placement import clear_location, overlaps


def test_free_cursor_is_kept():
    assert clear_location((1, 2, 3), 2.0, []) == (1.0, 2.0, 3.0)
    far = ((10, 10, 10), (12, 12, 12))
    assert clear_location((1, 2, 3), 2.0, [far]) == (1.0, 2.0, 3.0)


def test_default_cube_pushes_the_result_beside_the_scene():
    cube = ((-1, -1, -1), (1, 1, 1))
    other = ((3, -5, 0), (4, -4, 1))  # the scene's right edge, not near the cursor
    x, y, z = clear_location((0, 0, 0), 2.0, [cube, other])
    assert (y, z) == (0.0, 0.0)
    assert x - 1.0 == pytest.approx(4.0 + 0.5)  # left face a quarter size past the right edge
    assert not any(overlaps(((x - 1, -1, -1), (x + 1, 1, 1)), b) for b in (cube, other))


def test_touching_is_not_overlapping():
    assert not overlaps(((0, 0, 0), (1, 1, 1)), ((1, 0, 0), (2, 1, 1)))
    assert overlaps(((0, 0, 0), (1, 1, 1)), ((0.9, 0.9, 0.9), (2, 2, 2)))
