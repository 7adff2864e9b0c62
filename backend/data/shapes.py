"""Procedural shape generator: many families of coloured, textured objects, deterministic by seed.

Why: no ShapeNet can be downloaded here, so training data is made from parametric parts. A shape
is a list of parts (a trimesh each) with an albedo colour and a texture kind per part; families range
from primitives (box, cylinder, cone, sphere, torus, lathe, extrusion) to composites (chair, table,
lamp, mug, airplane, car, shelf, sofa, bottle) and generic, category-free ones (blob, plate, strokes,
jumble). Model frame: z is up; the renderer centres and
scales it. Pure numpy + trimesh; no bpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh
import trimesh.creation as tc

TEXTURES = ("solid", "stripes", "checker", "gradient")


@dataclass
class Shape:
    """A shape: its merged mesh, a per-face part id, and per-part colour (float RGB) and texture."""
    family: str
    mesh: trimesh.Trimesh
    face_part: np.ndarray      # (F,) int32
    colors: np.ndarray         # (P,3) float32 in [0,1]
    colors2: np.ndarray        # (P,3) second colour for textures
    textures: list[str]        # (P,) texture kind
    tex_freq: np.ndarray       # (P,) spatial frequency


def _box(rng: np.random.Generator, size, at=(0, 0, 0)) -> trimesh.Trimesh:
    m = tc.box(extents=np.asarray(size, dtype=float))
    m.apply_translation(at)
    return m


def _cyl(r: float, h: float, at=(0, 0, 0), axis: str = "z", sections: int = 24) -> trimesh.Trimesh:
    m = tc.cylinder(radius=r, height=h, sections=sections)
    _orient(m, axis)
    m.apply_translation(at)
    return m


def _orient(m: trimesh.Trimesh, axis: str) -> None:
    if axis == "x":
        m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0]))
    elif axis == "y":
        m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))


def _lathe(profile: np.ndarray, sections: int = 28) -> trimesh.Trimesh:
    """Revolve a (r, z) polyline around z (vases, lamp shades, bottles)."""
    return tc.revolve(profile, sections=sections)


def _random_profile(rng: np.random.Generator, n: int = 7, height: float = 1.0,
                    rmin: float = 0.15, rmax: float = 0.5, closed_top: bool = True) -> np.ndarray:
    z = np.linspace(0, height, n)
    r = rng.uniform(rmin, rmax, n)
    r = np.convolve(np.pad(r, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # smooth
    pts = [[0.0, 0.0]] + [[ri, zi] for ri, zi in zip(r, z)]
    if closed_top:
        pts.append([0.0, height])
    return np.asarray(pts)


def _star_extrusion(rng: np.random.Generator, height: float) -> trimesh.Trimesh:
    """A star-shaped random polygon (fan-triangulated) extruded along z."""
    k = int(rng.integers(3, 9))
    spiky = rng.random() < 0.5
    n = 2 * k if spiky else k
    ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if rng.random() < 0.3 else np.linspace(0, 2 * np.pi, n, endpoint=False)
    rad = rng.uniform(0.6, 1.0, n)
    if spiky:
        rad[1::2] *= rng.uniform(0.35, 0.7)
    return _extrude_fan(np.stack([np.cos(ang) * rad, np.sin(ang) * rad], -1) * 0.5, height, centred=False)


def _extrude_fan(poly: np.ndarray, height: float, centred: bool = True) -> trimesh.Trimesh:
    """Extrude a polygon that is star-shaped about the origin (so a fan from it triangulates it)."""
    n = len(poly)
    verts = np.concatenate([[[0.0, 0.0]], poly])
    faces = np.array([[0, i + 1, (i + 1) % n + 1] for i in range(n)])
    m = tc.extrude_triangulation(verts, faces, height)
    if centred:
        m.apply_translation((0, 0, -height / 2))
    return m


def _torus(R: float, r: float) -> trimesh.Trimesh:
    return tc.torus(major_radius=R, minor_radius=r, major_sections=28, minor_sections=12)


def _sphere(radii, at=(0, 0, 0)) -> trimesh.Trimesh:
    m = tc.icosphere(subdivisions=2)
    m.apply_scale(np.asarray(radii, dtype=float))
    m.apply_translation(at)
    return m


# ---- families: each returns a list of parts (mesh, part-group) ---------------------------------

def fam_box(rng):
    return [_box(rng, rng.uniform(0.2, 1.0, 3))]


def fam_cylinder(rng):
    return [_cyl(rng.uniform(0.1, 0.5), rng.uniform(0.2, 1.2), sections=int(rng.choice([6, 8, 24])))]


def fam_cone(rng):
    m = tc.cone(radius=rng.uniform(0.2, 0.6), height=rng.uniform(0.3, 1.2), sections=int(rng.choice([4, 6, 24])))
    return [m]


def fam_sphere(rng):
    return [_sphere(rng.uniform(0.25, 0.6, 3))]


def fam_torus(rng):
    R = rng.uniform(0.3, 0.5)
    m = _torus(R, rng.uniform(0.05, 0.25) * R * 2)
    if rng.random() < 0.5:
        _orient(m, "x")
    return [m]


def fam_lathe(rng):
    return [_lathe(_random_profile(rng, n=int(rng.integers(4, 9)), height=rng.uniform(0.5, 1.4)))]


def fam_extrusion(rng):
    m = _star_extrusion(rng, rng.uniform(0.1, 0.8))
    if rng.random() < 0.4:
        _orient(m, "x")
    return [m]


def fam_chair(rng):
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    sh, st = rng.uniform(0.35, 0.55), rng.uniform(0.04, 0.1)
    lr = rng.uniform(0.02, 0.045)
    parts = [_box(rng, (w, d, st), (0, 0, sh))]
    legs = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            at = (sx * (w / 2 - lr), sy * (d / 2 - lr), sh / 2)
            legs.append(_cyl(lr, sh, at) if rng.random() < 0.5 else _box(rng, (2 * lr, 2 * lr, sh), at))
    parts.append(trimesh.util.concatenate(legs))
    bh = rng.uniform(0.3, 0.7)
    if rng.random() < 0.7:
        parts.append(_box(rng, (w, st, bh), (0, -d / 2 + st / 2, sh + bh / 2)))
    else:  # slatted back
        slats = [_box(rng, (lr * 2, st, bh), (x, -d / 2 + st / 2, sh + bh / 2)) for x in np.linspace(-w / 2 + lr, w / 2 - lr, int(rng.integers(3, 6)))]
        slats.append(_box(rng, (w, st, 0.06), (0, -d / 2 + st / 2, sh + bh)))
        parts.append(trimesh.util.concatenate(slats))
    if rng.random() < 0.35:  # arm rests
        ah = rng.uniform(0.15, 0.25)
        parts.append(trimesh.util.concatenate([_box(rng, (0.05, d, 0.04), (sx * w / 2, 0, sh + ah)) for sx in (-1, 1)]))
    return parts


def fam_table(rng):
    w, d = rng.uniform(0.6, 1.4), rng.uniform(0.4, 1.0)
    h, tt = rng.uniform(0.4, 0.8), rng.uniform(0.03, 0.08)
    round_top = rng.random() < 0.35
    top = _cyl(min(w, d) / 2, tt, (0, 0, h)) if round_top else _box(rng, (w, d, tt), (0, 0, h))
    if rng.random() < 0.3 or round_top:
        base = [_cyl(rng.uniform(0.03, 0.08), h, (0, 0, h / 2)), _cyl(rng.uniform(0.15, 0.3), 0.04, (0, 0, 0.02))]
    else:
        lr = rng.uniform(0.025, 0.05)
        base = [_box(rng, (2 * lr, 2 * lr, h), (sx * (w / 2 - lr * 2), sy * (d / 2 - lr * 2), h / 2)) for sx in (-1, 1) for sy in (-1, 1)]
    return [top, trimesh.util.concatenate(base)]


def fam_lamp(rng):
    bh = rng.uniform(0.03, 0.1)
    base = _cyl(rng.uniform(0.12, 0.25), bh, (0, 0, bh / 2))
    ph = rng.uniform(0.4, 1.0)
    pole = _cyl(rng.uniform(0.015, 0.035), ph, (0, 0, bh + ph / 2))
    sh = rng.uniform(0.2, 0.4)
    shade = tc.cone(radius=rng.uniform(0.15, 0.35), height=sh, sections=24) if rng.random() < 0.5 else \
        _cyl(rng.uniform(0.12, 0.3), sh)
    shade.apply_translation((0, 0, bh + ph - sh * 0.3))
    return [base, pole, shade]


def fam_mug(rng):
    r, h = rng.uniform(0.2, 0.35), rng.uniform(0.35, 0.7)
    body = tc.annulus(r_min=r * 0.85, r_max=r, height=h, sections=28)
    body.apply_translation((0, 0, h / 2))
    bottom = _cyl(r, 0.04, (0, 0, 0.02))
    handle = _torus(h * 0.25, h * 0.05)
    _orient(handle, "y")
    handle.apply_translation((r + h * 0.15, 0, h / 2))
    return [body, bottom, handle]


def fam_airplane(rng):
    L, fr = rng.uniform(1.0, 1.6), rng.uniform(0.06, 0.12)
    fus = tc.capsule(height=L, radius=fr)
    _orient(fus, "x")
    span, chord = rng.uniform(0.9, 1.6), rng.uniform(0.15, 0.35)
    wing = _box(rng, (chord, span, 0.03), (rng.uniform(-0.1, 0.15) * L, 0, 0))
    tail = _box(rng, (chord * 0.5, span * 0.35, 0.02), (-L / 2, 0, 0))
    fin = _box(rng, (chord * 0.5, 0.02, rng.uniform(0.15, 0.3)), (-L / 2, 0, 0.12))
    parts = [fus, wing, trimesh.util.concatenate([tail, fin])]
    if rng.random() < 0.5:  # engines
        parts.append(trimesh.util.concatenate([_cyl(0.05, 0.2, (0.05 * L, s * span * 0.25, -0.06), "x") for s in (-1, 1)]))
    return parts


def fam_car(rng):
    L, W, H = rng.uniform(0.8, 1.4), rng.uniform(0.4, 0.6), rng.uniform(0.15, 0.3)
    wr = rng.uniform(0.08, 0.14)
    body = _box(rng, (L, W, H), (0, 0, wr + H / 2))
    cl = L * rng.uniform(0.4, 0.7)
    cabin = _box(rng, (cl, W * 0.9, H * rng.uniform(0.6, 1.0)), (rng.uniform(-0.15, 0.1) * L, 0, wr + H + H * 0.35))
    wheels = [_cyl(wr, 0.08, (sx * L * 0.33, sy * W / 2, wr), "y") for sx in (-1, 1) for sy in (-1, 1)]
    return [body, cabin, trimesh.util.concatenate(wheels)]


def fam_shelf(rng):
    w, d, h = rng.uniform(0.5, 1.0), rng.uniform(0.2, 0.4), rng.uniform(0.6, 1.5)
    t = 0.03
    sides = [_box(rng, (t, d, h), (sx * (w / 2 - t / 2), 0, h / 2)) for sx in (-1, 1)]
    boards = [_box(rng, (w, d, t), (0, 0, z)) for z in np.linspace(t / 2, h - t / 2, int(rng.integers(3, 6)))]
    parts = [trimesh.util.concatenate(sides), trimesh.util.concatenate(boards)]
    if rng.random() < 0.5:
        parts.append(_box(rng, (w, t, h), (0, -d / 2, h / 2)))
    return parts


def fam_sofa(rng):
    w, d, sh = rng.uniform(1.0, 1.8), rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.35)
    seat = _box(rng, (w, d, sh), (0, 0, sh / 2 + 0.05))
    bh = rng.uniform(0.3, 0.5)
    back = _box(rng, (w, 0.15, bh), (0, -d / 2 + 0.075, sh + bh / 2))
    ah = rng.uniform(0.1, 0.25)
    arms = trimesh.util.concatenate([_box(rng, (0.15, d, sh + ah), (sx * (w / 2 - 0.075), 0, (sh + ah) / 2 + 0.05)) for sx in (-1, 1)])
    return [seat, back, arms]


def fam_bottle(rng):
    h = rng.uniform(0.7, 1.2)
    r = rng.uniform(0.12, 0.25)
    nr = r * rng.uniform(0.25, 0.45)
    prof = np.array([[0, 0], [r, 0], [r, h * 0.6], [nr, h * 0.8], [nr, h], [0, h]])
    parts = [_lathe(prof)]
    if rng.random() < 0.6:
        parts.append(_cyl(nr * 1.1, h * 0.08, (0, 0, h)))
    return parts


def fam_composite(rng):
    """2-3 random primitives stacked/side by side (keeps the model from memorising families)."""
    prims = [fam_box, fam_cylinder, fam_sphere, fam_cone]
    parts, z = [], 0.0
    for _ in range(int(rng.integers(2, 4))):
        m = prims[int(rng.integers(len(prims)))](rng)[0]
        lo, hi = m.bounds
        m.apply_translation((rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), z - lo[2]))
        z += (hi[2] - lo[2]) * rng.uniform(0.6, 1.0)
        parts.append(m)
    return parts


# ---- generic families: no object category, just shape variety (added in model v3) -----------------
# Why: the v2 model fitted the categories above but fell to the mean-shape level on unseen objects;
# these teach silhouettes and depths that no category explains. They were added after seeing that
# result, so they are kept generic on purpose (no letters, no heads, no metaball solver).

def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return trimesh.transformations.quaternion_matrix(q / np.linalg.norm(q))


def _radial_polygon(rng, n: int, rough: float) -> np.ndarray:
    """A star-shaped (so fan-triangulable) polygon, often strongly non-convex."""
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    rad = np.exp(rng.normal(0, rough, n))
    rad = np.convolve(np.pad(rad, 1, mode="wrap"), [0.25, 0.5, 0.25], mode="valid")
    return np.stack([np.cos(ang), np.sin(ang)], -1) * (rad / rad.max())[:, None] * 0.5


def fam_blob(rng):
    """2-6 overlapping ellipsoids grown as a random chain: smooth, organic silhouettes."""
    parts, centres, radii = [], [], []
    for i in range(int(rng.integers(2, 7))):
        r = rng.uniform(0.15, 0.5, 3)
        if i == 0:
            c = np.zeros(3)
        else:
            j = int(rng.integers(len(centres)))
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            c = centres[j] + d * (radii[j].mean() + r.mean()) * rng.uniform(0.4, 0.85)
        m = tc.icosphere(subdivisions=3)
        m.apply_scale(r)
        m.apply_transform(_random_rotation(rng))
        m.apply_translation(c)
        parts.append(m)
        centres.append(c)
        radii.append(r)
    return [trimesh.util.concatenate(parts)] if rng.random() < 0.5 else parts


def fam_plate(rng):
    """A thin or thick slab with a random (often concave) outline, at a random attitude."""
    poly = _radial_polygon(rng, int(rng.integers(5, 25)), rng.uniform(0.15, 0.8))
    m = _extrude_fan(poly * rng.uniform(0.6, 1.4, 2), rng.uniform(0.04, 0.35))
    m.apply_transform(_random_rotation(rng) if rng.random() < 0.6 else
                      trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    return [m]


def fam_strokes(rng):
    """Connected pen strokes (straight or curved) of one width in one plane: frames, hooks, rings."""
    t = rng.uniform(0.06, 0.16)          # stroke width
    depth = rng.uniform(0.06, 0.3)       # extent across the plane
    round_joins = rng.random() < 0.5
    visited = [np.zeros(2)]
    segs = []
    for _ in range(int(rng.integers(1, 5))):
        p0 = visited[int(rng.integers(len(visited)))]
        a = rng.uniform(0, 2 * np.pi)
        if rng.random() < 0.55:  # straight
            path = [p0, p0 + rng.uniform(0.3, 0.9) * np.array([np.cos(a), np.sin(a)])]
        else:  # arc through p0
            R, span = rng.uniform(0.15, 0.45), rng.uniform(0.6, 2 * np.pi) * rng.choice([-1, 1])
            c = p0 - R * np.array([np.cos(a), np.sin(a)])
            path = [c + R * np.array([np.cos(x), np.sin(x)])
                    for x in np.linspace(a, a + span, max(3, int(abs(span) / 0.3)))]
        for q0, q1 in zip(path, path[1:]):
            d = q1 - q0
            seg = _box(rng, (float(np.linalg.norm(d)) + (0 if round_joins else t), t, depth))
            seg.apply_transform(trimesh.transformations.rotation_matrix(math.atan2(d[1], d[0]), [0, 0, 1]))
            seg.apply_translation((*(q0 + q1) / 2, 0))
            segs.append(seg)
            if round_joins:
                segs.append(_cyl(t / 2, depth, (*q1, 0), sections=12))
        visited.extend(path)
    m = trimesh.util.concatenate(segs)
    m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]) if rng.random() < 0.6
                      else _random_rotation(rng))  # mostly stood up, like a sign
    return [m]


def fam_jumble(rng):
    """2-5 primitives at random positions and attitudes, overlapping (a random CSG union)."""
    prims = [fam_box, fam_cylinder, fam_sphere, fam_cone, fam_torus, fam_plate]
    parts = []
    for i in range(int(rng.integers(2, 6))):
        m = prims[int(rng.integers(len(prims)))](rng)[0].copy()
        m.apply_translation(-m.bounds.mean(0))
        m.apply_transform(_random_rotation(rng))
        m.apply_translation(rng.uniform(-0.35, 0.35, 3) if i else np.zeros(3))
        parts.append(m)
    return parts


FAMILIES = {
    "box": fam_box, "cylinder": fam_cylinder, "cone": fam_cone, "sphere": fam_sphere,
    "torus": fam_torus, "lathe": fam_lathe, "extrusion": fam_extrusion, "chair": fam_chair,
    "table": fam_table, "lamp": fam_lamp, "mug": fam_mug, "airplane": fam_airplane, "car": fam_car,
    "shelf": fam_shelf, "sofa": fam_sofa, "bottle": fam_bottle, "composite": fam_composite,
    "blob": fam_blob, "plate": fam_plate, "strokes": fam_strokes, "jumble": fam_jumble,
}
# composites are richer, so they are drawn more often; the generic families most (about a quarter)
FAMILY_WEIGHTS = {k: (1.6 if k in {"chair", "table", "lamp", "mug", "airplane", "car", "shelf", "sofa", "composite"}
                      else 2.0 if k in {"blob", "plate", "strokes", "jumble"} else 1.0) for k in FAMILIES}


def make_shape(seed: int, family: str | None = None, families: tuple[str, ...] | None = None) -> Shape:
    """Deterministic shape for ``seed`` (family drawn from the seed unless given).

    ``families`` restricts the draw to those families by zeroing the others' weights, so a data set
    of only some families (``make-data --families``) is as seed-deterministic as the full mix.
    """
    rng = np.random.default_rng([seed, 20180131])
    names = list(FAMILIES)
    if family is None:
        p = np.array([FAMILY_WEIGHTS[n] if families is None or n in families else 0.0 for n in names])
        family = names[int(rng.choice(len(names), p=p / p.sum()))]
    parts = FAMILIES[family](rng)
    # random anisotropic stretch keeps proportions varied beyond each family's ranges
    stretch = rng.uniform(0.8, 1.25, 3)
    meshes, face_part = [], []
    for i, m in enumerate(parts):
        m = m.copy()
        m.apply_scale(stretch)
        meshes.append(m)
        face_part.append(np.full(len(m.faces), i, dtype=np.int32))
    mesh = trimesh.util.concatenate(meshes)
    p = len(parts)
    base = rng.uniform(0.05, 1.0, (p, 3)).astype(np.float32)
    if rng.random() < 0.5:  # often one dominant colour with small variations
        base = np.clip(base[:1] + rng.normal(0, 0.08, (p, 3)), 0.03, 1).astype(np.float32)
    colors2 = np.clip(base * rng.uniform(0.3, 0.7, (p, 1)) + rng.uniform(0, 0.3, (p, 3)), 0, 1).astype(np.float32)
    tex = [TEXTURES[int(rng.choice(4, p=[0.55, 0.15, 0.15, 0.15]))] for _ in range(p)]
    return Shape(family, mesh, np.concatenate(face_part), base, colors2, tex,
                 rng.uniform(4, 12, p).astype(np.float32))


def albedo(shape: Shape, face_idx: np.ndarray, pts_model: np.ndarray) -> np.ndarray:
    """Albedo (M,3) float32 at surface points hit on faces ``face_idx`` (model-frame positions).

    Why here: textures are functions of model-frame position, so the input image, the GT colour maps
    and the surface samples all agree on the colour of a point.
    """
    part = shape.face_part[face_idx]
    c1, c2 = shape.colors[part], shape.colors2[part]
    f = shape.tex_freq[part][:, None]
    kind = np.array([TEXTURES.index(t) for t in shape.textures])[part]
    p = pts_model / max(float(np.abs(shape.mesh.bounds).max()), 1e-6)
    w = np.zeros(len(part), dtype=np.float32)
    stripes = (np.sin(p[:, 2:3] * f * np.pi) > 0)[:, 0]
    checker = ((np.floor(p * f[:, :1]).sum(1) % 2) == 0)
    grad = np.clip((p[:, 2] + 1) / 2, 0, 1)
    w = np.where(kind == 1, stripes, w)
    w = np.where(kind == 2, checker, w)
    w = np.where(kind == 3, grad, w).astype(np.float32)[:, None]
    return (c1 * (1 - w) + c2 * w).astype(np.float32)
