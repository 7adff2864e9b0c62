"""Camera maths shared by the add-on, the backend and tests (no bpy: cameras are added by render.py).

Conventions: Blender world is right-handed, Z up; a camera looks down its local -Z with +Y up
(OpenGL, the same as NeRF's transforms.json). A pose is a 4x4 camera-to-world matrix.
"""

from __future__ import annotations

import math

import numpy as np

VIEWER_FRAME = "viewer-unit-ball/v1"

# Viewer frame (input camera: x right, y up, looking down -z) -> Blender world with the input
# camera looking along +Y (Blender's "front" view): x stays, viewer y becomes Z up, -z becomes +Y.
VIEWER_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=np.float64)


def viewer_to_blender(xyz: np.ndarray) -> np.ndarray:
    """Points in the backend's viewer frame -> Blender axes (Z up, the input camera at -Y)."""
    return (np.asarray(xyz, dtype=np.float32) @ VIEWER_TO_BLENDER.T.astype(np.float32)).astype(
        np.float32)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])
            ) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at ``eye`` looking at ``target`` (Blender convention)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    back = eye - target
    norm = np.linalg.norm(back)
    if norm < 1e-9:
        raise ValueError("camera position equals its target")
    z = back / norm
    if abs(float(np.dot(z, up / np.linalg.norm(up)))) > 0.999999:
        up = np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def ring_poses(count: int, radius: float, elevation_deg: float = 20.0,
               target: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 0.0),
               start_azimuth_deg: float = -90.0) -> list[np.ndarray]:
    """``count`` cameras evenly around ``target``; the first sits at -Y (the input view)."""
    if count < 1:
        raise ValueError("need at least one camera")
    tgt = np.asarray(target, dtype=np.float64)
    el = math.radians(elevation_deg)
    poses = []
    for i in range(count):
        az = math.radians(start_azimuth_deg + 360.0 * i / count)
        eye = tgt + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                       math.sin(el)])
        poses.append(look_at(eye, tgt))
    return poses


def focal_px(lens_mm: float, sensor_width_mm: float, width: int) -> float:
    """Horizontal focal length in pixels for a sensor-fit HORIZONTAL camera."""
    return lens_mm / sensor_width_mm * width


def angle_x_from_focal(focal: float, width: int) -> float:
    return 2.0 * math.atan(0.5 * width / focal)


def fit_radius(half_extent: float, lens_mm: float = 50.0, sensor_mm: float = 36.0,
               margin: float = 1.25) -> float:
    """Camera distance at which a sphere of ``half_extent`` fills the frame with a margin."""
    half_fov = math.atan(0.5 * sensor_mm / lens_mm)
    return margin * half_extent / math.sin(half_fov)


# -- framing ------------------------------------------------------------------------------------

FILL = 0.78  # the object's larger projected side / the frame's shorter side (goal: 0.70-0.85)


def projected_fill(points: np.ndarray, c2w: np.ndarray, lens_mm: float, sensor_mm: float,
                   width: int, height: int) -> tuple[float, np.ndarray]:
    """(fill, centre): the points' projected box as a fraction of the frame's shorter side (its
    larger side in pixels / min(width, height)) and the box centre in pixels from the frame
    centre, for a perspective camera with sensor fit HORIZONTAL."""
    q = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    depth = np.maximum(-q[:, 2], 1e-9)
    f = lens_mm / sensor_mm * width
    u, v = f * q[:, 0] / depth, f * q[:, 1] / depth
    ext = max(float(np.ptp(u)), float(np.ptp(v)))
    centre = np.array([(u.max() + u.min()) / 2, (v.max() + v.min()) / 2])
    return ext / min(width, height), centre


def framed_pose(points: np.ndarray, c2w: np.ndarray, lens_mm: float = 50.0, sensor_mm: float = 36.0,
                width: int = 512, height: int = 512, fill: float = FILL) -> np.ndarray:
    """``c2w`` moved along its own axes (orientation kept) so the points fill ``fill`` of the
    shorter side, centred. Why per view: a thin or flat object seen edge-on or face-on needs a
    very different distance than its bounding sphere suggests. A few fixed-point steps (fill is
    about proportional to 1/distance)."""
    pts = np.asarray(points, np.float64)
    if len(pts) == 0:
        return c2w
    m = np.array(c2w, np.float64)
    rot = m[:3, :3]
    centre = 0.5 * (pts.min(0) + pts.max(0))
    radius = max(float(np.linalg.norm(pts - centre, axis=1).max()), 1e-6)
    f = lens_mm / sensor_mm * width
    dist = fit_radius(radius, lens_mm, sensor_mm)
    target = centre
    for _ in range(8):
        m[:3, 3] = target + rot[:, 2] * dist
        got, off = projected_fill(pts, m, lens_mm, sensor_mm, width, height)
        if got <= 0:
            break
        target = target + rot[:, 0] * off[0] * dist / f + rot[:, 1] * off[1] * dist / f
        # never inside the object: keep the camera beyond the points' reach along the axis
        dist = max(dist * got / fill, radius * 1.05)
    m[:3, 3] = target + rot[:, 2] * dist
    return m
