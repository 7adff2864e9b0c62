"""The NeRF dataset layer: posed images in the NeRF-synthetic ``transforms.json`` convention.

Why: it is the de-facto exchange format (Blender exporters, instant-ngp, nerfstudio), and the
camera convention is exactly Blender's: ``transform_matrix`` is camera-to-world, the camera looks
down its local -Z with +Y up and +X right (``camera.matrix_world`` verbatim).

The document (cameras, intrinsics, ``aabb``) is read and validated by the add-on core's one
reader (``image2points.addon.core.transforms``: ``read_transforms``, ``intrinsics_from_doc``,
``check_pose``, ``Intrinsics``); this layer adds the pixels (Pillow, float RGBA) and turns the
core's ``DatasetError`` into ``NerfDataError``. Lens distortion is refused there, not ignored.

Alpha/background policy: images are kept as RGBA floats. Images without alpha get alpha = 1.
Training composites each ray's ground truth and prediction on the same random background colour
(so empty space must become transparent); evaluation and rendering composite on white.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from image2points.addon.core import nerf_capture as nc
from image2points.addon.core import transforms as tj
from image2points.addon.core.nerf_capture import Intrinsics

MAX_PIXELS = 4096 * 4096  # refuse to decode anything bigger (decompression bombs, memory)
MIN_AXIS_SPREAD = 1e-4  # estimate_aabb: below this the optical axes count as parallel


class NerfDataError(ValueError):
    """A dataset problem a person can fix; the message says what and where."""


@contextlib.contextmanager
def _data_errors() -> Iterator[None]:
    """The core reader's ``DatasetError`` as this layer's ``NerfDataError`` (same message)."""
    try:
        yield
    except nc.DatasetError as e:
        raise NerfDataError(str(e)) from None


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
# pixels and datasets


def decode_image(data: bytes | np.ndarray | Image.Image, where: str) -> np.ndarray:
    """Encoded bytes / PIL image / array -> float32 RGBA (H,W,4) in [0,1].

    Arrays: uint8 is divided by 255, uint16 (16-bit renders) by 65535, floats are taken as [0,1]
    (clipped) and must be finite; other dtypes are refused rather than guessed at."""
    if isinstance(data, np.ndarray):
        arr = data
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        elif arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise NerfDataError(f"{where}: image array has NaN/inf values")
        elif arr.dtype != np.uint8:
            raise NerfDataError(f"{where}: image array dtype {arr.dtype} is not supported "
                                "(use uint8, uint16 or float in [0, 1])")
        try:
            return nc.as_rgba_float(arr)  # the add-on's reading of a blob: grey, LA, RGB, RGBA
        except nc.DatasetError as e:
            raise NerfDataError(f"{where}: {e}") from None
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


def _image_size(path: str) -> tuple[int, int]:
    """What Pillow (this layer's decoder) claims, without decoding: more formats than the core's."""
    with Image.open(path) as im:
        return im.size


def _read_image(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            return decode_image(f.read(), path)
    except NerfDataError:
        raise
    except Exception as e:
        raise NerfDataError(f"{path}: cannot read image ({e})") from e


def _dataset(poses: Sequence[np.ndarray], images: list[np.ndarray], intr: Intrinsics, names: list[str],
             aabb: np.ndarray | None) -> NerfDataset:
    stack = np.stack(images).astype(np.float32)
    has_alpha = bool(np.any(stack[..., 3] < 1.0))
    return NerfDataset(stack, np.stack(poses).astype(np.float32), intr, names, aabb, has_alpha)


def _names(doc: dict[str, Any]) -> list[str]:
    return [str(fr.get("file_path", f"r_{i:03d}")) for i, fr in enumerate(doc["frames"])]


def _check_same_size(img: np.ndarray, size: tuple[int, int] | None, where: str) -> tuple[int, int]:
    """``size`` (w, h) of the first image; every other must match it."""
    hw = (img.shape[1], img.shape[0])
    if size is not None and hw != size:
        raise NerfDataError(f"{where}: image is {hw[0]} x {hw[1]} but frames[0] is {size[0]} x {size[1]}; "
                            "all images must have the same size")
    return hw


def dataset_from_doc(doc: dict[str, Any], load_image: Callable[[int], np.ndarray],
                     where: str = "transforms") -> NerfDataset:
    """A transforms document whose images come from ``load_image(i)`` (the server op: images
    arrive as blobs, never paths); validated by the core reader's functions."""
    with _data_errors():
        poses = tj.frame_poses(doc, where)
        aabb = tj.aabb_of(doc, where)
    images: list[np.ndarray] = []
    size = None
    for i in range(len(poses)):
        images.append(load_image(i))
        size = _check_same_size(images[-1], size, f"{where}: frames[{i}]")
    with _data_errors():
        intr = tj.intrinsics_from_doc(doc, size, where)
    return _dataset(poses, images, intr, _names(doc), aabb)


def load_transforms(path: str | os.PathLike, split: str = "train") -> NerfDataset:
    """Load ``transforms*.json`` (file or folder) and its images, validating everything."""
    with _data_errors():
        ds = tj.read_transforms(os.fspath(path), split, size_of=_image_size)
    images: list[np.ndarray] = []
    for i, (img_path, _m) in enumerate(ds.frames):
        images.append(_read_image(img_path))  # EXIF orientation may turn one: sizes checked again
        _check_same_size(images[-1], (ds.intrinsics.w, ds.intrinsics.h), f"{ds.path}: frames[{i}]")
    return _dataset([m for _, m in ds.frames], images, ds.intrinsics, _names(ds.doc), ds.aabb)


def cameras_from_transforms(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, Intrinsics, list[str], Path]:
    """Only the cameras of a transforms file (rendering needs no images); also returns its path."""
    with _data_errors():
        ds = tj.read_transforms(os.fspath(path), split, need_images=False, size_of=_image_size)
    poses = np.stack([m for _, m in ds.frames]).astype(np.float32)
    return poses, ds.intrinsics, _names(ds.doc), Path(ds.path)


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
    half_fov = math.atan(0.5 * max(intr.w / intr.fl_x, intr.h / intr.fl_y))
    half = max(1e-3, dist * math.sin(half_fov) * 1.15)
    return np.stack([centre - half, centre + half])
