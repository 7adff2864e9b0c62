"""Pure NeRF-dataset helpers: intrinsics of a Blender camera, poses, and the one transforms.json
reader (the add-on's import and fit and the backend's dataset layer both stand on it).

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

import json
import math
import os
import struct
from collections.abc import Callable, Sequence
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


# -- transforms.json: the one reader (the add-on's import and fit, the backend's dataset layer) --

DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def frame_stem(split: str, i: int) -> str:
    return f"{split}_{i:03d}"


def transforms_doc(intr: Intrinsics, frames: list[tuple[str, np.ndarray]],
                   aabb: Sequence[Sequence[float]] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The NeRF-synthetic document: camera_angle_x (+ fl_x, fl_y, cx, cy, w, h), frames with a
    relative ``file_path`` (no extension, as in the synthetic sets; the image is that + .png)."""
    doc: dict[str, Any] = dict(intr.as_dict())
    if aabb is not None:
        doc["aabb"] = [[float(v) for v in aabb[0]], [float(v) for v in aabb[1]]]
    doc["background"] = BACKGROUND_NOTE
    doc.update(extra or {})
    doc["frames"] = [{"file_path": path, "transform_matrix": np.asarray(m, np.float64).tolist()}
                     for path, m in frames]
    return doc


def write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any]:
    """A transforms file's JSON object (the messages say which file and where it breaks)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: top level must be a JSON object with 'frames'")
    return doc


def resolve_image(base_dir: str, file_path: str) -> str:
    """A frame's image file: the path as given, else with an image extension (the synthetic sets
    omit it)."""
    path = os.path.normpath(os.path.join(base_dir, file_path))
    if path.lower().endswith(IMAGE_EXTS) and os.path.isfile(path):
        return path
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        if os.path.isfile(path + ext):
            return path + ext
    raise DatasetError(f"image {file_path!r} not found next to the transforms file "
                       f"(looked for {path} and {path}.png)")


def find_transforms(path: str, split: str = "train") -> str:
    """A transforms file, or the split's file (or transforms.json) inside a dataset folder."""
    if os.path.isdir(path):
        for name in (f"transforms_{split}.json", "transforms.json"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise DatasetError(f"no transforms_{split}.json or transforms.json in {path}")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found")
    return path


def frame_poses(doc: dict[str, Any], where: str = "transforms") -> list[np.ndarray]:
    """The rigid c2w of every frame (``check_pose``); 'frames' must be a non-empty list."""
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{where}: 'frames' must be a non-empty list")
    poses = []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise DatasetError(f"{where}: frames[{i}] must be an object")
        if "transform_matrix" not in fr:
            raise DatasetError(f"{where}: frames[{i}] has no 'transform_matrix'")
        poses.append(check_pose(fr["transform_matrix"], f"{where}: frames[{i}]"))
    return poses


def aabb_of(doc: dict[str, Any], where: str = "transforms") -> np.ndarray | None:
    """The optional scene box ``aabb`` [[xmin,ymin,zmin],[xmax,ymax,zmax]] (world units)."""
    if "aabb" not in doc:
        return None
    shape = "'aabb' must be [[xmin,ymin,zmin],[xmax,ymax,zmax]]"
    try:
        box = np.asarray(doc["aabb"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {shape}") from None
    if box.shape != (2, 3) or not np.isfinite(box).all() or np.any(box[1] <= box[0]):
        raise DatasetError(f"{where}: {shape} with min < max")
    return box


@dataclass
class Dataset:
    path: str  # the transforms file
    doc: dict[str, Any]
    intrinsics: Intrinsics
    frames: list[tuple[str, np.ndarray]]  # (image path, rigid c2w)
    aabb: np.ndarray | None


def read_transforms(path: str, split: str = "train", need_images: bool = True,
                    size_of: Callable[[str], tuple[int, int]] | None = None) -> Dataset:
    """Read and validate a transforms file (file or dataset folder) with clear DatasetErrors.

    ``need_images``: every frame's image must exist and all have one size; without it (cameras
    only) the first image is looked at only when the file gives no w/h. ``size_of(path)`` -> (w, h)
    defaults to ``image_size`` (PNG/JPEG headers: Blender ships no Pillow)."""
    path = find_transforms(path, split)
    doc = read_json(path)
    poses = frame_poses(doc, path)
    aabb = aabb_of(doc, path)
    base = os.path.dirname(path)

    def size(i: int, img: str) -> tuple[int, int]:
        try:
            return tuple((size_of or image_size)(img))  # type: ignore[return-value]
        except Exception as exc:  # a pluggable reader (Pillow) raises many types for a bad file
            raise DatasetError(f"{img}: cannot read the image size ({exc}); give 'w' and 'h' in the "
                               "transforms file or fix the image") from None

    frames: list[tuple[str, np.ndarray]] = []
    first_size: tuple[int, int] | None = None
    for i, (fr, m) in enumerate(zip(doc["frames"], poses)):
        file_path = fr.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            if need_images:
                raise DatasetError(f"{path}: frames[{i}] has no 'file_path'")
            frames.append(("", m))
            continue
        img = os.path.normpath(os.path.join(base, file_path))
        if need_images:
            img = resolve_image(base, file_path)
            wh = size(i, img)
            if first_size is not None and wh != first_size:
                raise DatasetError(f"{path}: frames[{i}]: image is {wh[0]} x {wh[1]} but frames[0] is "
                                   f"{first_size[0]} x {first_size[1]} (mixed sizes); all images must "
                                   "have the same size")
            first_size = first_size or wh
        elif i == 0 and (doc.get("w") is None or doc.get("h") is None):
            try:
                img = resolve_image(base, file_path)
            except DatasetError:
                pass  # intrinsics_from_doc says the size is unknown
            else:
                first_size = size(i, img)
        frames.append((img, m))
    return Dataset(path, doc, intrinsics_from_doc(doc, first_size, path), frames, aabb)


def intrinsics_from_doc(doc: dict[str, Any], image_wh: tuple[int, int] | None = None,
                        where: str = "transforms") -> Intrinsics:
    """fl_x/fl_y/cx/cy or camera_angle_x(/y), with w/h from the document or the images.

    Every problem is a DatasetError naming ``where`` and the key: values that are not numbers,
    angles outside (0, pi) radians (degrees are a common slip), a w/h that disagrees with the
    images, lens distortion and non-pinhole camera models (refused rather than silently ignored).
    """
    def number(key: str, kind: type = float) -> Any:
        v = doc[key]
        try:
            if isinstance(v, bool):
                raise TypeError(key)
            out = kind(v)
        except (TypeError, ValueError, OverflowError):
            raise DatasetError(f"{where}: '{key}' must be {'an integer' if kind is int else 'a number'}, "
                               f"got {v!r}") from None
        if not math.isfinite(out):
            raise DatasetError(f"{where}: '{key}' must be finite, got {v!r}")
        return out

    def angle(key: str) -> float:
        a = float(number(key))
        if not 0.0 < a < math.pi:
            raise DatasetError(f"{where}: '{key}' must be in (0, pi) radians, got {a} (degrees given?)")
        return a

    def given(key: str) -> bool:
        return doc.get(key) is not None

    for key in DISTORTION_KEYS:
        if doc.get(key) and not abs(number(key)) <= 1e-9:
            raise DatasetError(f"{where}: lens distortion ({key}={doc[key]}) is not supported; "
                               "undistort the images first")
    if doc.get("camera_model", PINHOLE_MODELS[0]) not in PINHOLE_MODELS:
        raise DatasetError(f"{where}: camera_model {doc['camera_model']!r} is not supported "
                           "(use a pinhole camera)")
    w = number("w", int) if given("w") else (image_wh[0] if image_wh else None)
    h = number("h", int) if given("h") else (image_wh[1] if image_wh else None)
    if w is None or h is None:
        raise DatasetError(f"{where}: image size unknown; give 'w' and 'h' or provide the images")
    if image_wh is not None and (w, h) != tuple(image_wh):
        raise DatasetError(f"{where}: declares w x h = {w} x {h} but the images are "
                           f"{image_wh[0]} x {image_wh[1]}")
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: image size must be positive, got {w} x {h}")
    if given("fl_x"):
        fl_x = float(number("fl_x"))
        fl_y = float(number("fl_y")) if given("fl_y") else fl_x
    elif given("camera_angle_x"):
        fl_x = 0.5 * w / math.tan(0.5 * angle("camera_angle_x"))
        fl_y = 0.5 * h / math.tan(0.5 * angle("camera_angle_y")) if given("camera_angle_y") else fl_x
    else:
        raise DatasetError(f"{where}: no intrinsics; give 'camera_angle_x' (radians) or 'fl_x' (pixels)")
    if not (fl_x > 0 and fl_y > 0):
        raise DatasetError(f"{where}: focal lengths must be positive, got fl_x={fl_x}, fl_y={fl_y}")
    cx = float(number("cx")) if given("cx") else 0.5 * w
    cy = float(number("cy")) if given("cy") else 0.5 * h
    return Intrinsics(w, h, fl_x, fl_y, cx, cy)


# -- image files (Blender ships no Pillow) -------------------------------------------------------------

def image_size(path: str) -> tuple[int, int]:
    """(w, h) of a PNG (or JPEG via its SOF marker) without decoding it."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                marker = f.read(4)
                if len(marker) < 4:
                    break
                size = struct.unpack(">H", marker[2:4])[0]
                if marker[1] in (0xC0, 0xC1, 0xC2):
                    h, w = struct.unpack(">HH", f.read(5)[1:5])
                    return int(w), int(h)
                f.seek(size - 2, 1)
    raise DatasetError(f"{path} is not a PNG or JPEG image")


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


# -- requests for the backend's nerf ops (the only place that knows their parameter names) ------

def _camera_params(intr: Intrinsics) -> dict[str, Any]:
    return {"camera_angle_x": intr.angle_x, "fl_x": intr.fl_x, "fl_y": intr.fl_y,
            "cx": intr.cx, "cy": intr.cy, "w": intr.w, "h": intr.h}


def fit_request(ds: Dataset, field: str = "fast", minutes: float = 0.0, steps: int = 0,
                read: Any = None) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
    """op "nerf_fit": (params, blobs, media). Images travel as bytes (the server opens no paths):
    blob ``image_i`` belongs to ``transform_matrices[i]``. Names as in backend/nerf/ops.py."""
    def _read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    reader = read or _read
    params: dict[str, Any] = {"field": field, **_camera_params(ds.intrinsics),
                              "transform_matrices": [np.asarray(m, np.float64).tolist()
                                                     for _, m in ds.frames]}
    if minutes > 0:
        params["minutes"] = float(minutes)
    if steps > 0:
        params["steps"] = int(steps)
    if ds.aabb is not None:
        params["aabb"] = ds.aabb.tolist()
    blobs: dict[str, bytes] = {}
    media: dict[str, str] = {}
    for i, (path, _m) in enumerate(ds.frames):
        data = reader(path)
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            raise DatasetError(f"{path} is not a PNG (the NeRF backend takes PNG frames)")
        blobs[f"image_{i}"] = data
        media[f"image_{i}"] = "image/png"
    return params, blobs, media


def render_request(model_id: str, poses: list[np.ndarray], intr: Intrinsics) -> dict[str, Any]:
    """op "nerf_render" params: one image per pose, all with these intrinsics."""
    return {"model_id": model_id, **_camera_params(intr),
            "transform_matrices": [np.asarray(m, np.float64).tolist() for m in poses]}


def points_request(model_id: str, max_points: int) -> dict[str, Any]:
    """op "nerf_points" params; the answer is xyz float32 (N, 3) + rgb uint8 (N, 3) in Blender
    world coordinates."""
    return {"model_id": model_id, "max_points": int(max_points)}


def model_id_of(meta: dict[str, Any]) -> str:
    return str(meta.get("model_id") or "")


def is_world_frame(frame: str) -> bool:
    """nerf_points answers in the cameras' frame: "world (as the cameras), Z up, ..." (or
    "blender-world"); our cameras are Blender's, so that is Blender world."""
    return frame == "blender-world" or frame.startswith("world")


def result_images(blobs: dict[str, Any]) -> list[Any]:
    """A render result's image blobs in camera order ("image", or "image_0", "image_1", ...)."""
    numbered = sorted((int(k.split("_", 1)[1]), k) for k in blobs
                      if k.startswith("image_") and k.split("_", 1)[1].isdigit())
    if numbered:
        return [blobs[k] for _, k in numbered]
    return [blobs["image"]] if "image" in blobs else []
