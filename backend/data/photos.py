"""Photo-like composites with true masks: the project's own objects, shaded, over real photographs.

Backgrounds are crops of the studio-light HDRIs Blender ships (``datafiles/studiolights/world``:
city, courtyard, forest, interior, night, studio, sunrise, sunset: real photographs), tone-mapped
to 8 bits, flipped, rotated and colour-jittered. The object is ray-cast at twice the size and
box-filtered (soft edges), tinted by the scene's light, given a soft contact shadow, then the
whole frame is blurred a little, gets sensor noise and JPEG compression. The true mask is the
object's coverage (> 0.5).

Splits: ``train`` (seeds from 6_000_000) and ``tune`` (4_000_000) use the left half of each
panorama, ``eval`` (5_000_000) the right half, so eval shares neither backgrounds nor objects with
them; the reconstruction model's shapes use seeds below 3_000_000. Half of the eval objects come
from families nothing here was trained on (``NEW_FAMILIES``).
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageFilter
from scipy import ndimage

from .render import Caster, normalizer, render_input, surface_samples, view_rotation
from .shapes import Shape, make_shape

SPLITS = {"tune": (4_000_000, 0.0), "eval": (5_000_000, 0.5), "train": (6_000_000, 0.0)}  # seed base, panorama x


def hdri_dir() -> Path:
    """Blender's studio-light HDRIs inside the bpy wheel (found without importing bpy)."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the photo composites need the bpy wheel (its bundled studio-light "
                                "HDRIs): pip install bpy==4.2.23")
    hits = sorted(Path(spec.origin).parent.glob("*/datafiles/studiolights/world"))
    if not hits:
        raise FileNotFoundError(f"no datafiles/studiolights/world under {Path(spec.origin).parent}")
    return hits[-1]


@functools.lru_cache(maxsize=1)
def panoramas() -> tuple[np.ndarray, ...]:
    """The HDRIs tone-mapped to 8-bit sRGB-like (exposure to a mid-grey median, Reinhard, gamma)."""
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    out = []
    for f in sorted(hdri_dir().glob("*.exr")):
        hdr = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if hdr is None:
            raise OSError(f"cannot read {f} (OpenCV without OpenEXR?)")
        rgb = np.nan_to_num(hdr[..., ::-1].astype(np.float32), nan=0.0, posinf=0.0).clip(0, None)
        lum = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        rgb *= 0.25 / max(float(np.median(lum)), 1e-4)
        rgb = rgb / (1.0 + rgb)
        out.append(np.round(255 * rgb ** (1 / 2.2)).astype(np.uint8))
    return tuple(out)


def background(rng: np.random.Generator, h: int, w: int, x_offset: float) -> np.ndarray:
    """A jittered crop (h, w, 3) of one panorama, from its half starting at ``x_offset``."""
    panos = panoramas()
    pano = panos[int(rng.integers(len(panos)))]
    ph, pw = pano.shape[:2]
    cw = int(pw * rng.uniform(0.1, 0.3))
    ch = int(cw * h / w * rng.uniform(0.9, 1.1))
    if ch > 0.7 * ph:
        ch = int(0.7 * ph)
        cw = int(ch * w / h)
    x0 = int(pw * x_offset + rng.uniform(0, pw / 2 - cw))
    lo = min(0.25 * ph, ph - ch)
    y0 = int(rng.uniform(lo, max(lo, min(0.9 * ph, ph - ch))))  # mostly horizon and ground
    crop = Image.fromarray(pano[y0:y0 + ch, x0:x0 + cw])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    crop = crop.rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, expand=False,
                       fillcolor=tuple(int(v) for v in np.asarray(crop).reshape(-1, 3).mean(0)))
    crop = crop.crop((cw * 0.06, ch * 0.06, cw * 0.94, ch * 0.94)).resize((w, h), Image.Resampling.BICUBIC)
    img = np.asarray(crop).astype(np.float32)
    grey = img.mean(-1, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.7, 1.3)  # saturation
    img = img * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)  # exposure, white balance
    return np.clip(img, 0, 255)


# -- objects the reconstruction model never saw ---------------------------------------------------

def _rock(rng):
    m = trimesh.creation.icosphere(subdivisions=3)
    n = m.vertex_normals
    bumps = sum(rng.uniform(0.05, 0.15) * np.sin(n @ rng.normal(0, k, 3) + rng.uniform(0, 6))
                for k in (2, 4))
    m.vertices = m.vertices * (1 + bumps)[:, None] * rng.uniform(0.6, 1.2, 3)
    return [m]


def _capsule(rng):
    m = trimesh.creation.capsule(height=rng.uniform(0.6, 1.6), radius=rng.uniform(0.2, 0.45))
    m.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(0, np.pi / 2), [1, 0, 0]))
    return [m]


def _ring(rng):
    r_in = rng.uniform(0.25, 0.6)
    m = trimesh.creation.annulus(r_min=r_in, r_max=r_in + rng.uniform(0.15, 0.4), height=rng.uniform(0.1, 0.4))
    m.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(0.3, 1.4), [1, 0, 0]))
    return [m]


def _dumbbell(rng):
    a, b = rng.uniform(0.2, 0.4, 2)
    bar = trimesh.creation.cylinder(radius=rng.uniform(0.05, 0.12), height=1.2)
    return [bar, trimesh.creation.icosphere(2, a).apply_translation((0, 0, 0.6)),
            trimesh.creation.icosphere(2, b).apply_translation((0, 0, -0.6))]


NEW_FAMILIES = {"rock": _rock, "capsule": _capsule, "ring": _ring, "dumbbell": _dumbbell}


def new_shape(seed: int) -> Shape:
    """A shape of a family outside the model's training families, coloured like ``make_shape``."""
    rng = np.random.default_rng([seed, 77])
    name = list(NEW_FAMILIES)[int(rng.integers(len(NEW_FAMILIES)))]
    parts = NEW_FAMILIES[name](rng)
    mesh = trimesh.util.concatenate(parts)
    p = len(parts)
    face_part = np.concatenate([np.full(len(m.faces), i, np.int32) for i, m in enumerate(parts)])
    base = rng.uniform(0.05, 1.0, (p, 3)).astype(np.float32)
    colors2 = np.clip(base * 0.5 + rng.uniform(0, 0.3, (p, 3)), 0, 1).astype(np.float32)
    return Shape(name, mesh, face_part, base, colors2, ["solid"] * p, rng.uniform(4, 12, p).astype(np.float32))


# -- composites --------------------------------------------------------------------------------

@dataclass
class Photo:
    image: np.ndarray  # (H,W,3) uint8, JPEG-decoded
    mask: np.ndarray  # (H,W) bool, the truth
    rgba: np.ndarray  # (H,W,4) uint8: the same object render with its true alpha over black
    family: str
    surf: np.ndarray  # (N,3) float32 surface samples in the view's unit-ball frame (for Chamfer)


def make_photo(split: str, i: int, size: tuple[int, int] = (240, 320), surf_points: int = 0) -> Photo:
    """Composite ``i`` of ``split`` (deterministic)."""
    base, x_off = SPLITS[split]
    seed = base + i
    rng = np.random.default_rng([seed, 2024])
    h, w = size if rng.random() < 0.7 else size[::-1]
    shape = new_shape(seed) if (split == "eval" and i % 2) else make_shape(seed)
    norm = normalizer(shape.mesh)
    caster = Caster(shape, norm)
    R_in = view_rotation(rng.uniform(0, 360), rng.uniform(-5, 40))
    obj = int(min(h, w) * rng.uniform(0.6, 1.1))
    ren = render_input(caster, R_in, rng, res=2 * obj).astype(np.float32)
    ren = ren.reshape(obj, 2, obj, 2, 4).mean((1, 3))  # box filter: antialiased edges
    a = ren[..., 3:] / 255.0
    ys, xs = np.nonzero(a[..., 0] > 0.01)
    if len(ys) == 0:
        raise ValueError(f"composite {split}/{i}: the object rendered empty")
    col = np.where(a > 0, ren[..., :3] / np.maximum(a, 1e-6), 0)
    bg = background(rng, h, w, x_off)
    tint = (bg.reshape(-1, 3).mean(0) + 1) / (bg.mean() + 1)
    col = np.clip(col * tint ** 0.4 * rng.uniform(0.75, 1.15), 0, 255)
    # place the render's object box fully inside the frame
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    oy = int(rng.uniform(2 - y0, h - 2 - y1)) if h - 4 > y1 - y0 else (h - (y1 + y0)) // 2
    ox = int(rng.uniform(2 - x0, w - 2 - x1)) if w - 4 > x1 - x0 else (w - (x1 + x0)) // 2
    alpha = np.zeros((h, w, 1), np.float32)
    fg = np.zeros((h, w, 3), np.float32)
    sy0, sx0 = max(oy, 0), max(ox, 0)
    sy1, sx1 = min(oy + obj, h), min(ox + obj, w)
    alpha[sy0:sy1, sx0:sx1] = a[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox]
    fg[sy0:sy1, sx0:sx1] = col[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox]
    # soft contact shadow: the silhouette dropped down-right and blurred, darkening the ground
    d = obj * rng.uniform(0.01, 0.06)
    shadow = ndimage.gaussian_filter(ndimage.shift(alpha[..., 0], (d, d * rng.uniform(-1, 1)), order=1),
                                     obj * rng.uniform(0.02, 0.06))
    bg = bg * (1 - rng.uniform(0.2, 0.55) * shadow[..., None])
    img = fg * alpha + bg * (1 - alpha)
    pil = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8))
    if rng.random() < 0.7:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9)))
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, rng.uniform(0, 4), (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8)).save(
        buf, "JPEG", quality=int(rng.integers(60, 96)))
    image = np.asarray(Image.open(buf).convert("RGB"))
    rgba = np.concatenate([fg * alpha, alpha * 255], -1)
    surf = np.zeros((0, 3), np.float32)
    if surf_points:
        s, _ = surface_samples(shape, norm, surf_points, seed)
        surf = (s @ R_in.T).astype(np.float32)
    return Photo(image, alpha[..., 0] > 0.5, np.clip(np.round(rgba), 0, 255).astype(np.uint8),
                 shape.family, surf)


def photo_set(split: str, n: int, size: tuple[int, int] = (240, 320)) -> list[Photo]:
    return [make_photo(split, i, size) for i in range(n)]
