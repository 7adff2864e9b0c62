"""Pure NeRF capture maths: intrinsics of a Blender camera, poses, image arrays. The
transforms.json reader is ``transforms.py``, the backend requests ``nerf_requests.py``.

No bpy, no torch, no Pillow (tests and the backend may import it anywhere). Conventions, as in the
NeRF-synthetic sets: a pose is the 4x4 camera-to-world matrix of a camera that looks down its local
-Z with +Y up (Blender/OpenGL), i.e. ``camera.matrix_world`` with the scale taken out; pixel
(u, v) counts from the top-left corner, v down; ``fl_x``/``fl_y`` are in pixels and
``camera_angle_x = 2 atan(w / (2 fl_x))``.

Blender's camera model (``BKE_camera_params_compute_viewplane``): the sensor size is
``sensor_height`` only for sensor_fit VERTICAL, else ``sensor_width`` (AUTO too); the fit is AUTO's
HORIZONTAL when ``w*aspect_x >= h*aspect_y``, else VERTICAL; the fitted axis spans ``lens/sensor``
of the image in that direction; non-square pixels stretch y by ``aspect_y/aspect_x``; shift moves
the principal point by ``shift * max(fitted extent)`` pixels (y up). All of this is checked against
``bpy_extras.object_utils.world_to_camera_view`` in tests/test_nerf_blender.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .camera import look_at

SENSOR_WIDTH_MM = 36.0
IMAGE_DIR = "images"
BACKGROUND_NOTE = "transparent (RGBA, alpha = coverage); evaluate on white"


class DatasetError(ValueError):
    """A dataset or camera that cannot be used, with a message a person can act on."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (u right, v down, origin at the top-left image corner)."""

    w: int
    h: int
    fl_x: float
    fl_y: float
    cx: float
    cy: float

    @property
    def angle_x(self) -> float:
        return 2.0 * math.atan(0.5 * self.w / self.fl_x)

    @property
    def angle_y(self) -> float:
        return 2.0 * math.atan(0.5 * self.h / self.fl_y)

    def as_dict(self) -> dict[str, Any]:
        return {"camera_angle_x": self.angle_x, "camera_angle_y": self.angle_y,
                "fl_x": self.fl_x, "fl_y": self.fl_y, "cx": self.cx, "cy": self.cy,
                "w": self.w, "h": self.h}

    def scaled(self, w: int, h: int) -> Intrinsics:
        """The same camera at another resolution (previews, point extraction)."""
        sx, sy = w / self.w, h / self.h
        return Intrinsics(w, h, self.fl_x * sx, self.fl_y * sy, self.cx * sx, self.cy * sy)


def render_size(res_x: int, res_y: int, percentage: int = 100) -> tuple[int, int]:
    """Blender's output size for a resolution percentage (it truncates)."""
    return max(1, int(res_x * percentage / 100)), max(1, int(res_y * percentage / 100))


def resolve_sensor_fit(sensor_fit: str, w: int, h: int, aspect_x: float = 1.0,
                       aspect_y: float = 1.0) -> str:
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if w * aspect_x >= h * aspect_y else "VERTICAL"
    if sensor_fit not in ("HORIZONTAL", "VERTICAL"):
        raise DatasetError(f"unknown sensor fit {sensor_fit!r}")
    return sensor_fit


def intrinsics_from_params(
    lens: float, sensor_width: float, sensor_height: float, sensor_fit: str,
    res_x: int, res_y: int, percentage: int = 100, aspect_x: float = 1.0, aspect_y: float = 1.0,
    shift_x: float = 0.0, shift_y: float = 0.0, cam_type: str = "PERSP", allow_shift: bool = False,
) -> Intrinsics:
    """Blender camera + render settings -> pixel intrinsics of the rendered image."""
    if cam_type != "PERSP":
        raise DatasetError(f"camera type {cam_type} is not supported: NeRF datasets need a "
                           "perspective camera (Camera > Lens > Type: Perspective)")
    if (shift_x or shift_y) and not allow_shift:
        raise DatasetError(f"camera shift ({shift_x:g}, {shift_y:g}) is not supported here: set "
                           "Camera > Lens > Shift X/Y to 0")
    if lens <= 0 or sensor_width <= 0 or sensor_height <= 0:
        raise DatasetError("camera lens and sensor size must be positive")
    w, h = render_size(res_x, res_y, percentage)
    fit = resolve_sensor_fit(sensor_fit, w, h, aspect_x, aspect_y)
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    ycor = aspect_y / aspect_x
    if fit == "HORIZONTAL":
        fl_x = lens / sensor * w
        fl_y = fl_x / ycor
        viewfac = float(w)
    else:
        fl_y = lens / sensor * h
        fl_x = fl_y * ycor
        viewfac = ycor * h
    cx = 0.5 * w - shift_x * viewfac
    cy = 0.5 * h + shift_y * viewfac / ycor
    return Intrinsics(w, h, fl_x, fl_y, cx, cy)


def intrinsics_from_camera(cam_data: Any, render: Any, allow_shift: bool = False) -> Intrinsics:
    """Duck-typed ``bpy.types.Camera`` + ``scene.render`` -> intrinsics (no bpy import)."""
    return intrinsics_from_params(
        float(cam_data.lens), float(cam_data.sensor_width), float(cam_data.sensor_height),
        str(cam_data.sensor_fit), int(render.resolution_x), int(render.resolution_y),
        int(render.resolution_percentage), float(render.pixel_aspect_x),
        float(render.pixel_aspect_y), float(cam_data.shift_x), float(cam_data.shift_y),
        str(cam_data.type), allow_shift)


def camera_settings(intr: Intrinsics, sensor_width: float = SENSOR_WIDTH_MM) -> dict[str, Any]:
    """Intrinsics -> Blender camera + render settings that reproduce them (sensor fit HORIZONTAL).

    Non-square pixels become a pixel aspect (Blender wants both >= 1); an off-centre principal
    point becomes a lens shift."""
    ratio = intr.fl_x / intr.fl_y  # = aspect_y / aspect_x
    aspect_x, aspect_y = (1.0, ratio) if ratio >= 1.0 else (1.0 / ratio, 1.0)
    lens = intr.fl_x / intr.w * sensor_width
    shift_x = (0.5 * intr.w - intr.cx) / intr.w
    shift_y = (intr.cy - 0.5 * intr.h) * ratio / intr.w
    return {"lens": lens, "sensor_width": sensor_width, "sensor_fit": "HORIZONTAL",
            "resolution_x": intr.w, "resolution_y": intr.h, "resolution_percentage": 100,
            "pixel_aspect_x": aspect_x, "pixel_aspect_y": aspect_y,
            "shift_x": shift_x if abs(shift_x) > 1e-9 else 0.0,
            "shift_y": shift_y if abs(shift_y) > 1e-9 else 0.0}


# -- poses ------------------------------------------------------------------------------------

def clean_pose(matrix: Any) -> np.ndarray:
    """A camera's matrix_world -> a rigid c2w (scale and shear removed; what Blender projects with)."""
    m = np.array(matrix, dtype=np.float64).reshape(4, 4)
    if not np.isfinite(m).all():
        raise DatasetError("camera matrix has non-finite values")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-12:
        raise DatasetError("camera matrix is singular (zero scale?)")
    if det < 0:
        raise DatasetError("camera matrix is mirrored (negative scale): fix the camera's scale")
    # Blender's matrix.normalized(): each column to unit length (exact for rotation * scale)
    out = np.eye(4)
    out[:3, :3] = rot / np.linalg.norm(rot, axis=0, keepdims=True)
    out[:3, 3] = m[:3, 3]
    return out


def check_pose(m: Any, where: str = "camera") -> np.ndarray:
    """A rigid 4x4 float64 c2w from a file or a request; uniform scale (object scale in Blender) is
    divided out.

    Refuses wrong shapes, non-finite values, a bottom row other than (0,0,0,1), singular or
    mirrored rotations and shear/non-uniform scale: a NeRF fit on those silently goes wrong.
    """
    what = f"{where}: transform_matrix"
    try:
        a = np.array(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{what} is not a numeric matrix") from None
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4):
        raise DatasetError(f"{what} must be 4x4 (or 3x4), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DatasetError(f"{what} has NaN/inf entries")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise DatasetError(f"{what} bottom row must be [0, 0, 0, 1], got {a[3].tolist()}")
    r = a[:3, :3]
    det = float(np.linalg.det(r))
    if abs(det) < 1e-8:
        raise DatasetError(f"{what} rotation is singular (det={det:.3g}); is a camera scaled to zero?")
    if det < 0:
        raise DatasetError(f"{what} is mirrored (det<0); expected a right-handed camera-to-world matrix")
    norms = np.linalg.norm(r, axis=0)
    if np.max(np.abs(norms / norms.mean() - 1.0)) > 1e-3:
        raise DatasetError(f"{what} is not a rotation: non-uniform scale {np.round(norms, 4).tolist()}; "
                           "apply or clear the camera's scale")
    r = r / norms
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-3):
        raise DatasetError(f"{what} is not a rotation: it has shear (columns not orthogonal); "
                           "expected a rigid camera pose")
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = a[:3, 3]
    return out


def hemisphere_poses(count: int, radius: float, target: Sequence[float],
                     min_elev_deg: float = 10.0, max_elev_deg: float = 75.0) -> list[np.ndarray]:
    """``count`` cameras on the upper hemisphere (Fibonacci spiral in a band of elevations),
    all looking at ``target``; deterministic."""
    if count < 1:
        raise DatasetError("need at least one view")
    tgt = np.asarray(target, np.float64)
    z0, z1 = math.sin(math.radians(min_elev_deg)), math.sin(math.radians(max_elev_deg))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    poses = []
    for i in range(count):
        z = z0 + (z1 - z0) * (i + 0.5) / count  # equal-area in the band
        r = math.sqrt(max(0.0, 1.0 - z * z))
        az = i * golden
        eye = tgt + radius * np.array([r * math.cos(az), r * math.sin(az), z])
        poses.append(look_at(eye, tgt))
    return poses


def orbit_poses(count: int, radius: float, target: Sequence[float], elev_deg: float = 30.0,
                azimuth_offset_deg: float = 17.0) -> list[np.ndarray]:
    """Held-out cameras on a separate orbit (own radius, elevation and azimuths)."""
    tgt = np.asarray(target, np.float64)
    el = math.radians(elev_deg)
    poses = []
    for i in range(count):
        az = math.radians(azimuth_offset_deg + 360.0 * i / max(1, count))
        eye = tgt + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                       math.sin(el)])
        poses.append(look_at(eye, tgt))
    return poses


def project(points: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """World points -> (u, v, depth) with u, v in pixels (v down); for tests and sanity checks."""
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    p = np.asarray(points, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    u = intr.cx + intr.fl_x * p[:, 0] / depth
    v = intr.cy - intr.fl_y * p[:, 1] / depth
    return np.stack([u, v, depth], axis=1)


def as_rgba_float(img: Any) -> np.ndarray:
    """An image blob (an (H, W[, C]) uint8/float array) -> (H, W, 4) float32 0..1, top row first."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DatasetError(f"image array of shape {arr.shape} is not (H, W, C)")
    a = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    h, w, c = a.shape
    out = np.ones((h, w, 4), np.float32)
    if c in (1, 2):
        out[..., :3] = a[..., :1]
    else:
        out[..., :3] = a[..., :3]
    if c in (2, 4):
        out[..., 3] = a[..., c - 1]
    return np.clip(out, 0.0, 1.0)


def blender_pixels(rgba_top_first: np.ndarray) -> np.ndarray:
    """(H, W, 4) float, top row first -> the flat bottom-up buffer ``Image.pixels`` wants."""
    return np.ascontiguousarray(rgba_top_first[::-1], dtype=np.float32).ravel()


def on_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA -> RGB composited on white (how held-out views are scored)."""
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + (1.0 - a)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


