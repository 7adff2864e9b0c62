"""Posed-image datasets in the NeRF-synthetic ``transforms.json`` convention.

Why: it is the de-facto exchange format (Blender exporters, instant-ngp, nerfstudio), and the
camera convention is exactly Blender's: ``transform_matrix`` is camera-to-world, the camera looks
down its local -Z with +Y up and +X right (``camera.matrix_world`` verbatim).

Intrinsics: either ``camera_angle_x`` (horizontal FOV in radians; optional ``camera_angle_y``),
or ``fl_x`` (+ ``fl_y``, ``cx``, ``cy``) in pixels; ``w``/``h`` are optional and checked against
the images. Principal point defaults to the image centre. Lens distortion is not supported and
is rejected rather than silently ignored.

Alpha/background policy: images are kept as RGBA floats. Images without alpha get alpha = 1.
Training composites each ray's ground truth and prediction on the same random background colour
(so empty space must become transparent); evaluation and rendering composite on white.

Optional extras we read and write: ``aabb`` ([[xmin,ymin,zmin],[xmax,ymax,zmax]], the scene box
in world units); ``near``/``far`` are accepted but the sampler prefers the box.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MAX_PIXELS = 4096 * 4096  # refuse to decode anything bigger (decompression bombs, memory)
MIN_AXIS_SPREAD = 1e-4  # estimate_aabb: below this the optical axes count as parallel
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class NerfDataError(ValueError):
    """A dataset problem a person can fix; the message says what and where."""


@dataclass
class Intrinsics:
    """Pinhole intrinsics in pixels; pixel (0, 0) is the top-left pixel, centres at +0.5."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def to_json(self) -> dict[str, float]:
        return {"fl_x": self.fx, "fl_y": self.fy, "cx": self.cx, "cy": self.cy, "w": self.width, "h": self.height,
                "camera_angle_x": 2.0 * math.atan(0.5 * self.width / self.fx)}

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (previews, tests)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)


@dataclass
class NerfDataset:
    """Images (N,H,W,4 float32 in [0,1]) with c2w poses (N,4,4) and shared intrinsics."""

    images: np.ndarray
    c2w: np.ndarray
    intrinsics: Intrinsics
    names: list[str] = field(default_factory=list)
    aabb: np.ndarray | None = None
    has_alpha: bool = True

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rgb_on(self, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """RGB composited on a constant background (evaluation uses white)."""
        a = self.images[..., 3:4]
        return self.images[..., :3] * a + np.asarray(background, np.float32) * (1.0 - a)


# ---------------------------------------------------------------------------------------------
# validation helpers


def intrinsics_from_json(doc: dict[str, Any], width: int | None, height: int | None, where: str = "transforms") -> Intrinsics:
    """Intrinsics from ``camera_angle_x`` or ``fl_x``..; ``width``/``height`` come from the images."""
    for key in ("k1", "k2", "k3", "p1", "p2"):
        try:
            k = abs(float(doc.get(key, 0.0) or 0.0))
        except (TypeError, ValueError):
            raise NerfDataError(f"{where}: '{key}' must be a number, got {doc[key]!r}") from None
        if not k <= 1e-9:  # NaN is refused too
            raise NerfDataError(f"{where}: lens distortion ({key}={doc[key]}) is not supported; undistort the images first")
    if doc.get("camera_model", "OPENCV") not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise NerfDataError(f"{where}: camera_model {doc['camera_model']!r} is not supported (use a pinhole camera)")
    w = doc.get("w", width)
    h = doc.get("h", height)
    if w is None or h is None:
        raise NerfDataError(f"{where}: image size unknown; give 'w' and 'h' or provide the images")
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError) as e:
        raise NerfDataError(f"{where}: 'w'/'h' must be integers, got {doc.get('w')!r}/{doc.get('h')!r}") from e
    if width is not None and (w, h) != (width, height):
        raise NerfDataError(f"{where}: declares w x h = {w} x {h} but the images are {width} x {height}")
    if w <= 0 or h <= 0:
        raise NerfDataError(f"{where}: image size must be positive, got {w} x {h}")

    def num(key: str) -> float:
        try:
            v = float(doc[key])
        except (TypeError, ValueError) as e:
            raise NerfDataError(f"{where}: {key!r} must be a number, got {doc[key]!r}") from e
        if not math.isfinite(v):
            raise NerfDataError(f"{where}: {key!r} is not finite")
        return v

    if "fl_x" in doc:
        fx = num("fl_x")
        fy = num("fl_y") if "fl_y" in doc else fx
    elif "camera_angle_x" in doc:
        ax = num("camera_angle_x")
        if not 0.0 < ax < math.pi:
            raise NerfDataError(f"{where}: camera_angle_x must be in (0, pi) radians, got {ax} (degrees given?)")
        fx = 0.5 * w / math.tan(0.5 * ax)
        if "camera_angle_y" in doc:
            ay = num("camera_angle_y")
            if not 0.0 < ay < math.pi:
                raise NerfDataError(f"{where}: camera_angle_y must be in (0, pi) radians, got {ay}")
            fy = 0.5 * h / math.tan(0.5 * ay)
        else:
            fy = fx
    else:
        raise NerfDataError(f"{where}: no intrinsics; give 'camera_angle_x' (radians) or 'fl_x' (pixels)")
    if fx <= 0 or fy <= 0:
        raise NerfDataError(f"{where}: focal lengths must be positive, got fl_x={fx}, fl_y={fy}")
    cx = num("cx") if "cx" in doc else 0.5 * w
    cy = num("cy") if "cy" in doc else 0.5 * h
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), w, h)


def validate_c2w(m: Any, where: str) -> np.ndarray:
    """Return a rigid 4x4 float64 c2w; uniform scale (object scale in Blender) is divided out.

    Rejects wrong shapes, non-finite values, a bottom row other than (0,0,0,1), singular or
    mirrored rotations and shear/non-uniform scale: a NeRF fit on those silently goes wrong.
    """
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise NerfDataError(f"{where}: transform_matrix is not a numeric matrix") from e
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4):
        raise NerfDataError(f"{where}: transform_matrix must be 4x4 (or 3x4), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NerfDataError(f"{where}: transform_matrix has NaN/inf entries")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise NerfDataError(f"{where}: transform_matrix bottom row must be [0, 0, 0, 1], got {a[3].tolist()}")
    r = a[:3, :3]
    det = float(np.linalg.det(r))
    if abs(det) < 1e-8:
        raise NerfDataError(f"{where}: transform_matrix rotation is singular (det={det:.3g}); is a camera scaled to zero?")
    if det < 0:
        raise NerfDataError(f"{where}: transform_matrix is mirrored (det<0); expected a right-handed camera-to-world matrix")
    norms = np.linalg.norm(r, axis=0)
    if np.max(np.abs(norms / norms.mean() - 1.0)) > 1e-3:
        raise NerfDataError(f"{where}: transform_matrix has non-uniform scale {np.round(norms, 4).tolist()}; "
                            "apply or clear the camera's scale")
    r = r / norms
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-3):
        raise NerfDataError(f"{where}: transform_matrix rotation has shear (columns not orthogonal); expected a rigid camera pose")
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = a[:3, 3]
    return out


def decode_image(data: bytes | np.ndarray | Image.Image, where: str) -> np.ndarray:
    """Encoded bytes / PIL image / array -> float32 RGBA (H,W,4) in [0,1].

    Arrays: uint8 is divided by 255, uint16 (16-bit renders) by 65535, floats are taken as [0,1]
    (clipped) and must be finite; other dtypes are refused rather than guessed at."""
    if isinstance(data, np.ndarray):
        arr = data
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        elif arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise NerfDataError(f"{where}: image array has NaN/inf values")
        else:
            raise NerfDataError(f"{where}: image array dtype {arr.dtype} is not supported "
                                "(use uint8, uint16 or float in [0, 1])")
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise NerfDataError(f"{where}: image array must be HxW, HxWx3 or HxWx4, got {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        if arr.shape[2] == 3:
            arr = np.concatenate([arr, np.ones_like(arr[..., :1])], axis=2)
        return np.clip(arr, 0.0, 1.0)
    if isinstance(data, Image.Image):
        img = data
        if img.width * img.height > MAX_PIXELS:
            raise NerfDataError(f"{where}: image is {img.width} x {img.height}, more than the {MAX_PIXELS} pixel limit")
    else:  # the project's one decoder (orientation, formats, limits); no rescaling: poses need the size
        from ..images import open_image
        from ..ops import JobError

        try:
            img = open_image(data, where, MAX_PIXELS, max_bytes=1 << 31, max_side=None)
        except JobError as e:
            raise NerfDataError(f"cannot decode image: {e.message}") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        g = np.asarray(img, dtype=np.float32)
        g = g / (65535.0 if img.mode.startswith("I;16") else max(1.0, float(g.max())))
        return np.concatenate([np.repeat(g[..., None], 3, 2), np.ones_like(g[..., None])], axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    img = img.convert("RGBA" if has_alpha else "RGB")
    return decode_image(np.asarray(img), where)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise NerfDataError(f"{path}: file not found") from e
    except OSError as e:
        raise NerfDataError(f"{path}: cannot read ({e})") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise NerfDataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(doc, dict):
        raise NerfDataError(f"{path}: top level must be a JSON object with 'frames'")
    return doc


def resolve_transforms(path: str | os.PathLike, split: str = "train") -> Path:
    """A transforms file, or a folder holding ``transforms_<split>.json`` / ``transforms.json``."""
    p = Path(path)
    if p.is_dir():
        for name in (f"transforms_{split}.json", "transforms.json"):
            if (p / name).is_file():
                return p / name
        raise NerfDataError(f"{p}: no transforms_{split}.json or transforms.json in this folder")
    if not p.exists():
        raise NerfDataError(f"{p}: file not found")
    return p


def _find_image(base: Path, file_path: str, where: str) -> Path:
    cand = (base / file_path)
    if cand.suffix.lower() in _IMAGE_EXTS and cand.is_file():
        return cand
    for ext in _IMAGE_EXTS:
        c = cand.with_name(cand.name + ext)
        if c.is_file():
            return c
    raise NerfDataError(f"{where}: image {file_path!r} not found under {base} (tried the name as is and with "
                        f"{', '.join(_IMAGE_EXTS[:3])})")


def parse_frames(doc: dict[str, Any], load_image: Callable[[int, dict[str, Any]], np.ndarray],
                 where: str = "transforms") -> NerfDataset:
    """Validate a transforms document whose images come from ``load_image(i, frame)``.

    Shared by the disk loader and the server op (which gets images as blobs, never paths).
    """
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise NerfDataError(f"{where}: 'frames' must be a non-empty list")
    images, poses, names = [], [], []
    size: tuple[int, int] | None = None
    for i, fr in enumerate(frames):
        fw = f"{where}: frames[{i}]"
        if not isinstance(fr, dict):
            raise NerfDataError(f"{fw} must be an object")
        if "transform_matrix" not in fr:
            raise NerfDataError(f"{fw} has no 'transform_matrix'")
        poses.append(validate_c2w(fr["transform_matrix"], fw))
        img = load_image(i, fr)
        hw = (img.shape[1], img.shape[0])
        if size is None:
            size = hw
        elif hw != size:
            raise NerfDataError(f"{fw}: image is {hw[0]} x {hw[1]} but frames[0] is {size[0]} x {size[1]}; "
                                "all images must have the same size")
        images.append(img)
        names.append(str(fr.get("file_path", f"frame_{i}")))
    assert size is not None
    intr = intrinsics_from_json(doc, size[0], size[1], where)
    aabb = None
    if "aabb" in doc:
        try:
            aabb = np.asarray(doc["aabb"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise NerfDataError(f"{where}: 'aabb' must be [[xmin,ymin,zmin],[xmax,ymax,zmax]]") from e
        if aabb.shape != (2, 3) or not np.all(np.isfinite(aabb)) or np.any(aabb[1] <= aabb[0]):
            raise NerfDataError(f"{where}: 'aabb' must be [[xmin,ymin,zmin],[xmax,ymax,zmax]] with min < max")
    stack = np.stack(images).astype(np.float32)
    has_alpha = bool(np.any(stack[..., 3] < 1.0))
    return NerfDataset(stack, np.stack(poses).astype(np.float32), intr, names, aabb, has_alpha)


def load_transforms(path: str | os.PathLike, split: str = "train") -> NerfDataset:
    """Load ``transforms*.json`` (file or folder) and its images, validating everything."""
    tf = resolve_transforms(path, split)
    doc = _read_json(tf)
    base = tf.parent

    def load(i: int, fr: dict[str, Any]) -> np.ndarray:
        fp = fr.get("file_path")
        if not isinstance(fp, str) or not fp:
            raise NerfDataError(f"{tf}: frames[{i}] has no 'file_path'")
        img_path = _find_image(base, fp, f"{tf}: frames[{i}]")
        try:
            return decode_image(img_path.read_bytes(), str(img_path))
        except NerfDataError:
            raise
        except Exception as e:
            raise NerfDataError(f"{img_path}: cannot read image ({e})") from e

    return parse_frames(doc, load, str(tf))


def transforms_doc(c2w: np.ndarray, intr: Intrinsics, file_paths: Sequence[str] | None = None,
                   aabb: np.ndarray | None = None) -> dict[str, Any]:
    """A transforms document for the given cameras (what ``save_transforms`` writes)."""
    c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    paths = list(file_paths) if file_paths is not None else [f"./r_{i:03d}" for i in range(len(c2w))]
    doc: dict[str, Any] = dict(intr.to_json())
    if aabb is not None:
        doc["aabb"] = np.asarray(aabb, dtype=np.float64).tolist()
    doc["frames"] = [{"file_path": p, "transform_matrix": m.tolist()} for p, m in zip(paths, c2w)]
    return doc


def save_transforms(path: str | os.PathLike, c2w: np.ndarray, intr: Intrinsics, file_paths: Sequence[str] | None = None,
                    images: np.ndarray | None = None, aabb: np.ndarray | None = None) -> Path:
    """Write a transforms JSON (and optionally the images as PNG next to it, paths relative)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = transforms_doc(c2w, intr, file_paths, aabb)
    if images is not None:
        for fr, img in zip(doc["frames"], images):
            arr = np.asarray(img)
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
            out = path.parent / (fr["file_path"] if fr["file_path"].lower().endswith(".png") else fr["file_path"] + ".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(out)
    path.write_text(json.dumps(doc, indent=1))
    return path


def cameras_from_transforms(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, Intrinsics, list[str], Path]:
    """Only the cameras of a transforms file (rendering needs no images); also returns its path."""
    tf = resolve_transforms(path, split)
    doc = _read_json(tf)
    frames = doc.get("frames")
    if not isinstance(frames, list) or not frames:
        raise NerfDataError(f"{tf}: 'frames' must be a non-empty list")
    poses = np.stack([validate_c2w(fr.get("transform_matrix") if isinstance(fr, dict) else None, f"{tf}: frames[{i}]")
                      for i, fr in enumerate(frames)])
    width = height = None
    if "w" not in doc or "h" not in doc:
        fp = frames[0].get("file_path") if isinstance(frames[0], dict) else None
        if not fp:
            raise NerfDataError(f"{tf}: no 'w'/'h' and no image to read the size from")
        img_path = _find_image(tf.parent, fp, f"{tf}: frames[0]")
        try:
            with Image.open(img_path) as im:
                width, height = im.size
        except Exception as e:  # Pillow raises many types for bad files
            raise NerfDataError(f"{img_path}: cannot read the image size ({e}); give 'w' and 'h' "
                                "in the transforms file or fix the image") from e
    intr = intrinsics_from_json(doc, width, height, str(tf))
    names = [str(fr.get("file_path", f"r_{i:03d}")) for i, fr in enumerate(frames)]
    return poses.astype(np.float32), intr, names, tf


def estimate_aabb(c2w: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """A scene box when the dataset gives none: around the point the cameras look at.

    Centre = least-squares intersection of the optical axes; half size = what the mean camera
    sees at that distance (its FOV), so an object-centric capture is fully inside the box.

    When the axes are (nearly) parallel (a single camera, a forward-facing or side-by-side rig)
    the intersection is undefined or lands arbitrarily far along the view direction, and when it
    lies behind most cameras (an inside-out capture) it is not what they film. Both raise
    ``NerfDataError`` asking for an explicit ``aabb``: a box guessed at some distance along the
    mean view direction would be silently wrong for most such scenes (the depth of the subject is
    exactly what the cameras do not tell us), and a fit in a wrong box just fails to converge
    with no message. "Nearly parallel" is the smallest eigenvalue of the mean of (I - d d^T) below
    ``MIN_AXIS_SPREAD`` = 1e-4, i.e. the axes spread by less than about 1 degree (two axes at an
    angle t give sin^2(t/2)).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    o = c2w[:, :3, 3]
    d = -c2w[:, :3, 2]
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for oi, di in zip(o, d):
        p = np.eye(3) - np.outer(di, di)
        a += p
        b += p @ oi
    hint = "give the scene box as 'aabb' [[xmin,ymin,zmin],[xmax,ymax,zmax]] (world units)"
    if float(np.linalg.eigvalsh(a / len(o))[0]) < MIN_AXIS_SPREAD:
        raise NerfDataError(f"cannot estimate the scene box: the {len(o)} camera(s) look along (nearly) "
                            f"parallel axes, so they do not meet at a point; {hint}")
    centre = np.linalg.solve(a, b)
    if np.mean(np.einsum("ij,ij->i", centre - o, d) > 0) < 0.5:
        raise NerfDataError(f"cannot estimate the scene box: the point the cameras' axes meet is behind "
                            f"most of them (an inside-out capture?); {hint}")
    dist = float(np.linalg.norm(o - centre, axis=1).mean())
    half_fov = math.atan(0.5 * max(intr.width / intr.fx, intr.height / intr.fy))
    half = max(1e-3, dist * math.sin(half_fov) * 1.15)
    return np.stack([centre - half, centre + half])
