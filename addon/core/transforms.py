"""transforms.json, the one reader and writer: the add-on's Import and Fit and the backend's
dataset layer (backend/nerf/dataset.py) all stand on it. No bpy, no torch, no Pillow.

Intrinsics come from ``fl_x``/``fl_y`` or ``camera_angle_x``/``_y``; poses are checked rotations
(uniform scale taken out); image sizes are read from file headers, never by decoding.
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

from .nerf_capture import BACKGROUND_NOTE, DatasetError, Intrinsics, check_pose

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


