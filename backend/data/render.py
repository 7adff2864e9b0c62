"""Ray-cast renderer (trimesh + embreex): input RGBA images and ground-truth maps in the output frame.

Why ray casting: it is pip-only, exact, and ~700 maps/s at 64x64 here (research §4), and it gives
depth, hit face and position, so depth, mask and albedo maps come out of one cast.

Frames. The shape's model frame is z-up. For one input view with world->camera rotation ``R_in``
(azimuth/elevation around the bounding-box centre ``c``, no roll), the output frame
"viewer-unit-ball/v1" is ``p_out = R_in @ (p - c) / r`` with ``r`` the largest distance of a surface
point from ``c``: x right, y up, the input camera looking down -z from (0, 0, dist). Rays are
transformed into the model frame, so one BVH per shape serves every view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh

from .shapes import Shape, albedo

INPUT_RES = 128  # rendered input image; preprocess() reduces it to 64x64


@dataclass
class Normalizer:
    """Model frame -> unit-ball frame (before the view rotation)."""
    center: np.ndarray  # (3,)
    radius: float


def normalizer(mesh: trimesh.Trimesh) -> Normalizer:
    """Centre = AABB centre; radius = max vertex distance (= max surface distance for a mesh)."""
    c = mesh.bounds.mean(0)
    r = float(np.linalg.norm(mesh.vertices - c, axis=1).max())
    return Normalizer(c.astype(np.float64), max(r, 1e-9))


def view_rotation(azim_deg: float, elev_deg: float) -> np.ndarray:
    """World(model, z-up)->camera rotation of a camera at (azim, elev) looking at the centre, no roll."""
    a, e = math.radians(azim_deg), math.radians(elev_deg)
    eye = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    z = eye / np.linalg.norm(eye)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


class Caster:
    """Casts rays given in the OUTPUT frame of one view against a shape in its model frame."""

    def __init__(self, shape: Shape, norm: Normalizer):
        self.shape, self.norm = shape, norm
        self.mesh = shape.mesh
        self.intersector = trimesh.ray.ray_pyembree.RayMeshIntersector(self.mesh) \
            if trimesh.ray.has_embree else self.mesh.ray

    def cast(self, R_in: np.ndarray, origins: np.ndarray, dirs: np.ndarray):
        """Returns (hit mask (M,), dist in output units (M,), face (M,), model-frame point (M,3))."""
        o = origins @ R_in * self.norm.radius + self.norm.center  # R^T applied to rows
        d = dirs @ R_in
        loc, iray, itri = self.intersector.intersects_location(o, d, multiple_hits=False)
        m = len(origins)
        hit = np.zeros(m, bool)
        dist = np.zeros(m, np.float32)
        face = np.zeros(m, np.int64)
        pts = np.zeros((m, 3), np.float64)
        hit[iray] = True
        dist[iray] = (np.linalg.norm(loc - o[iray], axis=1) / self.norm.radius).astype(np.float32)
        face[iray] = itri
        pts[iray] = loc
        return hit, dist, face, pts


def ortho_rays(R: np.ndarray, t: np.ndarray, h: int, w: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Rays (origins on the camera plane, unit directions) of an ortho camera, output frame, row-major."""
    u = ((np.arange(w) + 0.5) / w * 2 - 1) * s
    v = (1 - (np.arange(h) + 0.5) / h * 2) * s
    yy, xx = np.meshgrid(v, u, indexing="ij")
    cam = np.stack([xx.ravel(), yy.ravel(), np.zeros(h * w)], -1)
    origins = (cam - t) @ R
    dirs = np.broadcast_to(-R[2], origins.shape).copy()
    return origins, dirs


def render_views(caster: Caster, R_in: np.ndarray, Rs: np.ndarray, ts: np.ndarray, h: int, w: int,
                 s: float) -> tuple[np.ndarray, np.ndarray]:
    """GT depth (K,h,w) float32 (0 = background) and albedo (K,h,w,3) uint8 at ortho cameras."""
    k = len(Rs)
    depth = np.zeros((k, h * w), np.float32)
    rgb = np.zeros((k, h * w, 3), np.uint8)
    for i in range(k):
        o, d = ortho_rays(Rs[i], ts[i], h, w, s)
        hit, dist, face, pts = caster.cast(R_in, o, d)
        depth[i, hit] = dist[hit]
        rgb[i, hit] = np.round(albedo(caster.shape, face[hit], pts[hit]) * 255).astype(np.uint8)
    return depth.reshape(k, h, w), rgb.reshape(k, h, w, 3)


def render_input(caster: Caster, R_in: np.ndarray, rng: np.random.Generator,
                 res: int = INPUT_RES, randomise: bool = False) -> np.ndarray:
    """Input RGBA (res,res,4) uint8: perspective camera on +z of the output frame, random fov and
    light, Lambert + ambient shading of the albedo; alpha 0 outside the object.

    ``randomise`` (the v5 recipe's domain randomisation; off = the v4 render, bit for bit): a wider
    field of view, light colour, intensity and ambient variation, and in ``TRUNCATE_P`` of the
    renders the object shifted so part of it leaves the frame (``_truncation``). Roll is not here:
    it belongs to the output frame (fold it into ``R_in``, see ``roll_rotation``)."""
    fov = rng.uniform(*(DR_FOV if randomise else (20.0, 45.0)))
    dist = 1.15 / math.sin(math.radians(fov) / 2)
    f = math.tan(math.radians(fov) / 2)
    u = ((np.arange(res) + 0.5) / res * 2 - 1) * f
    v = (1 - (np.arange(res) + 0.5) / res * 2) * f
    yy, xx = np.meshgrid(v, u, indexing="ij")
    if randomise and rng.random() < TRUNCATE_P:
        du, dv = _truncation(caster, R_in, dist, f, rng)
        xx, yy = xx - du, yy - dv
    dirs = np.stack([xx.ravel(), yy.ravel(), -np.ones(res * res)], -1)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to([0.0, 0.0, dist], dirs.shape).copy()
    hit, _, face, pts = caster.cast(R_in, origins, dirs)
    n = caster.mesh.face_normals[face[hit]] @ R_in.T  # to output frame
    n *= -np.sign((n * dirs[hit]).sum(1, keepdims=True) + 1e-12)  # face the camera
    if randomise:
        light = np.array([rng.uniform(-1, 1), rng.uniform(-0.6, 1), rng.uniform(0.1, 1)])
        light /= np.linalg.norm(light)
        tint = 1 - rng.uniform(0, DR_TINT, 3)                 # light colour (max channel ~1)
        tint /= tint.max()
        amb = rng.uniform(*DR_AMBIENT)
        amb_col = amb * (1 - rng.uniform(0, DR_TINT / 2, 3))  # ambient (sky) colour
        gain = rng.uniform(*DR_INTENSITY)
        shade = amb_col + (1 - amb) * gain * np.clip(n @ light, 0, 1)[:, None] * tint
    else:
        light = np.array([rng.uniform(-1, 1), rng.uniform(-0.2, 1), rng.uniform(0.3, 1)])
        light /= np.linalg.norm(light)
        amb = rng.uniform(0.25, 0.5)
        shade = (amb + (1 - amb) * np.clip(n @ light, 0, 1))[:, None]
    col = albedo(caster.shape, face[hit], pts[hit]) * shade
    img = np.zeros((res * res, 4), np.uint8)
    img[hit, :3] = np.round(np.clip(col, 0, 1) * 255).astype(np.uint8)
    img[hit, 3] = 255
    return img.reshape(res, res, 4)


# domain randomisation of the input render (render_input(randomise=True), the v5 recipe)
DR_FOV = (15.0, 60.0)        # degrees (v4: 20-45)
DR_ROLL = 10.0               # degrees either way, folded into R_in by the caller (roll_rotation)
DR_AMBIENT = (0.1, 0.6)      # (v4: 0.25-0.5)
DR_INTENSITY = (0.7, 1.3)    # key light gain
DR_TINT = 0.25               # a channel of the key light dims by up to this (the ambient by half)
TRUNCATE_P = 0.15            # fraction of renders with the object partly out of the frame
TRUNCATE_MAX = 0.15          # at most this fraction of its projected extent leaves the frame


def roll_rotation(roll_deg: float) -> np.ndarray:
    """Rotation about the view axis z: ``roll_rotation(r) @ view_rotation(a, e)`` is a camera
    rolled by ``r``; the output frame rolls with it, so the GT stays aligned with the image."""
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _truncation(caster: Caster, R_in: np.ndarray, dist: float, f: float,
                rng: np.random.Generator) -> tuple[float, float]:
    """Image-plane shift (tangent units) that pushes 3%..TRUNCATE_MAX of the object's projected
    extent over one random edge of the frame (an off-centre crop of the same camera)."""
    p = (caster.mesh.vertices - caster.norm.center) / caster.norm.radius @ R_in.T
    uv = p[:, :2] / (dist - p[:, 2:3])
    lo, hi = uv.min(0), uv.max(0)
    q = rng.uniform(0.03, TRUNCATE_MAX)
    axis, side = int(rng.integers(2)), int(rng.integers(2))
    ext = hi[axis] - lo[axis]
    shift = (f + q * ext - hi[axis]) if side else -(f + q * ext + lo[axis])
    d = [0.0, 0.0]
    d[axis] = float(shift)
    return d[0], d[1]


def surface_samples(shape: Shape, norm: Normalizer, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform surface points in the centred unit-ball model frame, with albedo (uint8)."""
    pts, face = trimesh.sample.sample_surface(shape.mesh, n, seed=seed)
    col = np.round(albedo(shape, face, pts) * 255).astype(np.uint8)
    return ((pts - norm.center) / norm.radius).astype(np.float32), col
