"""The input's own view is the picture: lift its foreground pixels with the model's front depth.

Why: the 64x64 fixed-view maps give a soft silhouette, albedo-like colours and a visible sampling
grid. The part of the object the input camera sees is known exactly from the image, so it is
taken from there; the model supplies the front depth and everything the camera cannot see.

Mapping (pure numpy, no bpy/zmq). The input photo is perspective, the model's fixed views are
orthographic (``geometry``): the front view (camera on +z, R = I) draws the object scaled to the
unit ball, while the network input is cropped to the mask's box, so the scale between the two is
the object's own and is not known from the crop alone. It is fitted per image as a similarity
from working-image pixels to front-view camera-plane coordinates, matching the first moments and
the area of the input mask to those of the model's front mask:

    x = a * col + bx,   y = -a * row + by      (col, row continuous; pixel (r, c) covers [c, c+1))

A lifted pixel sits at depth D(x, y), the front depth map bilinearly interpolated after filling
the pixels outside the model's front mask with their nearest inside value (the mask test), and
``p = R_f^T ((x, y, -D) - t_f)``. Projecting a point back is the inverse map, so the lifted
points' input-view silhouette is the working mask, pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..segment import _cv2, alpha_is_mask
from . import symmetry
from .geometry import CAM_DIST, ORTHO_S, ortho_pixel_grid

WORK_SIZE = 512          # long side of the working image (full resolution when smaller)
DEFAULT_DENSITY = 100_000
MIN_DENSITY, MAX_DENSITY = 10_000, 1_000_000
CARVE_TOL_PX = 2         # model points may project this far outside the mask (working pixels); snapped in
FRONT_TOL = 0.06         # model points within this of the lifted depth are on it; nearer: dropped
VISIBLE_SHARE = (0.2, 0.7)
DEPTH_JUMP: float | None = 0.1  # a bilinear depth this far from its cell's own is a depth edge
# Other views' points on the lifted surface (within FRONT_TOL, inside the mask) stay, in their
# pixel's colour. Why: the lifted depth is the front map's alone; the other views' estimates of
# the same surface cover it better (lower GT-to-cloud distance in the same-run eval).
NEAR_KEEP = True
HIDDEN_COLOUR = "picture"  # the unseen side: "picture" colours (picture_colours) or the "model"'s, toned
HIDDEN_GRID = 32  # the picture's colours on this grid over the input view...
HIDDEN_WINDOW = 1  # ...and this many cells round a hidden cell's projection are its candidates
SEEN_BAND = 0.3  # other views' points this far in front of the lifted surface: the same surface seen
MIRROR_CELLS = 64  # mirrored points replace the model's in the cells they reach (cells across the cloud)
RIM_BAND = 2.0  # front-map pixels: the lifted surface's band along the outline that rim_depth bends back
HIDDEN_RIM = 1.0  # map pixels: the same bend for the unseen side's views, along their own outlines
MIRROR = True  # the visible side mirrored across the object's mirror plane takes over part of the unseen side


def default_density(h: int, w: int) -> int:
    """~100k points for a >= 256 px input, fewer for small ones (no more pixels to show)."""
    return int(np.clip(DEFAULT_DENSITY * (max(h, w) / 256) ** 2, MIN_DENSITY, DEFAULT_DENSITY))


@dataclass
class InputView:
    """Working-image pixels (col, row) <-> front camera-plane (x, y) at front depth d.

    A similarity on the plane through the origin (d = CAM_DIST), scaled along each ray by
    ``g(d) = 1 + k (d - CAM_DIST)``: ``k`` = 1 / (the input camera's distance from the origin)
    for a perspective photo, 0 for an orthographic one."""

    a: float
    bx: float
    by: float
    shape: tuple[int, int]  # working image (h, w)
    k: float = 0.0

    def g(self, d: np.ndarray | float) -> np.ndarray:
        return np.maximum(1.0 + self.k * (np.asarray(d) - CAM_DIST), 1e-3)  # float32 stays float32

    def to_plane(self, col: np.ndarray, row: np.ndarray, d: np.ndarray | float = CAM_DIST
                 ) -> tuple[np.ndarray, np.ndarray]:
        g = self.g(d)
        return g * (self.a * col + self.bx), g * (self.by - self.a * row)

    def to_pixels(self, x: np.ndarray, y: np.ndarray, d: np.ndarray | float = CAM_DIST
                  ) -> tuple[np.ndarray, np.ndarray]:
        g = self.g(d)
        return (x / g - self.bx) / self.a, (self.by - y / g) / self.a

    def lift(self, col: np.ndarray, row: np.ndarray, depth: np.ndarray, s: float = ORTHO_S
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-plane (x, y) and depth d of the surface ``depth`` (front map) along each ray."""
        d = np.full(len(col), CAM_DIST)
        for _ in range(1 if self.k == 0 else 4):  # fixed point: the ray meets the depth map
            x, y = self.to_plane(col, row, d)
            d, d0 = sample_map(depth, x, y, s), d
            if np.abs(d - d0).max() < 1e-5:
                break
        x, y = self.to_plane(col, row, d)
        return x, y, d


def working_image(image: np.ndarray, alpha: np.ndarray, scale: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 and mask (bool) at ``scale`` (<= 1). At scale 1 the bytes are the input's;
    downscaling averages premultiplied colour so edges don't darken towards the background."""
    rgb = np.asarray(image)[..., :3]
    if scale >= 1.0:
        return np.ascontiguousarray(rgb), alpha > 0.5
    h, w = alpha.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    a = torch.from_numpy(alpha.astype(np.float32))[None, None]
    pm = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * a
    t = F.interpolate(torch.cat([pm, a], 1), size=size, mode="bilinear", antialias=True,
                      align_corners=False)[0]
    aw = t[3].clamp(0, 1)
    col = (t[:3] / aw.clamp(min=1e-6)).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(col * 255).astype(np.uint8), aw.numpy() > 0.5


OUTLINE_PX = 2  # how deep a hard mask's outline pixels may be mixed with the backdrop


def is_photo(image: np.ndarray) -> bool:
    """No alpha that says where the object ends (``segment.alpha_is_mask``, the cut's own rule):
    the pixels outside the mask are a real backdrop, so the mask's outline pixels are partly
    backdrop."""
    im = np.asarray(image)
    return im.ndim == 3 and im.shape[2] in (3, 4) and not alpha_is_mask(im)


def unmixed_outline(rgb: np.ndarray, mask: np.ndarray, depth: int = OUTLINE_PX) -> np.ndarray:
    """A photo cut by a hard mask: each outline pixel (within ``depth`` of the mask's edge) whose
    colour is nearer the backdrop beside it than the object beside it (the means of the pixels
    outside the mask and of those deeper inside, within 5 px) takes the object's. Why: lifted as
    they are, those part-backdrop pixels ring the object in the backdrop's colour (a white rim on
    a car shot on white); the pixels inside keep their bytes."""
    if depth <= 0:
        return rgb
    core = ndimage.binary_erosion(mask, iterations=depth)
    band = mask & ~core
    if not band.any() or not core.any() or mask.all():
        return rgb
    rows, cols = np.nonzero(band)
    r0, r1 = max(rows.min() - 3, 0), rows.max() + 4
    c0, c1 = max(cols.min() - 3, 0), cols.max() + 4
    win = (slice(r0, r1), slice(c0, c1))
    f = rgb[win].astype(np.float32)
    sums = []
    for m in (core[win], ~mask[win]):  # the object's and the backdrop's local mean colours
        w = m.astype(np.float32)
        n = ndimage.uniform_filter(w, 5)
        c = ndimage.uniform_filter(f * w[..., None], (5, 5, 1))
        sums.append((c / np.maximum(n, 1e-6)[..., None], n > 1e-6))
    (fg, has_fg), (bg, has_bg) = sums
    b = band[win]
    px = f[b]
    fix = has_fg[b] & has_bg[b] & (np.abs(px - bg[b]).sum(1) < np.abs(px - fg[b]).sum(1))
    if not fix.any():
        return rgb
    out = rgb.copy()
    rr, cc = np.nonzero(b)
    out[r0 + rr[fix], c0 + cc[fix]] = np.round(fg[b][fix]).astype(np.uint8)
    return out


BOX_MARGIN = 0.01  # the box-centred fit must overlap by this much more than the centroid one
PERSPECTIVE_K = (0.0, 1 / 8, 1 / 5.5, 1 / 4.2, 1 / 3.3, 1 / 2.7)  # 1 / camera distance tried


def fit_input_view(mask: np.ndarray, front_mask: np.ndarray, front_d: np.ndarray | None = None,
                   s: float = ORTHO_S) -> InputView:
    """Moment match of the working mask (pixels) to the model's front surface (camera plane
    and depth): for each camera distance in ``PERSPECTIVE_K`` (orthographic first), the surface
    is brought to the origin plane along its rays, matched in area and either in centroid or
    with the mask's box centre on the origin, and scored by the IoU of its splat with the mask;
    the best one wins. Without depths: orthographic."""
    rows, cols = np.nonzero(mask)
    cc, rc = cols.mean() + 0.5, rows.mean() + 0.5
    fr, fc = np.nonzero(front_mask)
    h, w = front_mask.shape
    if len(fr) < 4:  # the model sees nothing: put the mask's box at 90% of the view
        span = max(np.ptp(cols) + 1, np.ptp(rows) + 1)
        a = 2 * 0.9 * s / span
        return InputView(float(a), float(-a * cc), float(a * rc), mask.shape)
    px = 2 * s / w
    fx = ((fc + 0.5) / w * 2 - 1) * s
    fy = (1 - (fr + 0.5) / h * 2) * s
    fd = front_d[fr, fc].astype(np.float64) if front_d is not None else np.full(len(fr), CAM_DIST)
    best, best_iou = None, -1.0
    a0 = np.sqrt(len(fr) / len(rows)) * px  # the orthographic scale: one map pixel ~ px / a0
    f = max(1, int(px / a0))  # score on a grid of about the map's pitch
    small = mask[::f, ::f]
    # the frame's origin is the object's box centre, so the mask's box centre sits near (0, 0)
    # (exactly for an orthographic photo): the second candidate for each distance. Why: where the
    # model's front mask lacks a part (a table's legs) or has one too many, its centroid drags the
    # picture off the model's surface (val, 400 shapes: tables 0.0771 -> 0.0734, all 0.0776 -> 0.0772)
    # (it must win by BOX_MARGIN: on the mug example the two tie, and the centroid fit looks better)
    bc, br = (cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2
    for k in PERSPECTIVE_K if front_d is not None else (0.0,):
        g = np.maximum(1.0 + k * (fd - CAM_DIST), 1e-3)
        wt = 1.0 / g ** 2  # a map pixel's area on the origin plane
        ox, oy = fx / g, fy / g
        a = float(np.sqrt(wt.sum() * px * px / len(rows)))
        moment = InputView(a, float((ox * wt).sum() / wt.sum() - a * cc),
                           float((oy * wt).sum() / wt.sum() + a * rc), mask.shape, k)
        for view, pref in ((moment, BOX_MARGIN), (InputView(a, -a * bc, a * br, mask.shape, k), 0.0)):
            c, r = view.to_pixels(fx, fy, fd)
            hit = np.zeros(small.shape, bool)
            ci, ri = np.floor(c / f).astype(int), np.floor(r / f).astype(int)
            ok = (ci >= 0) & (ci < small.shape[1]) & (ri >= 0) & (ri < small.shape[0])
            hit[ri[ok], ci[ok]] = True
            rad = int(np.ceil(px / a / f / 2))
            if rad > 0:
                hit = dilate_square(hit, rad)
            iou = (hit & small).sum() / max((hit | small).sum(), 1) + pref
            if iou > best_iou + 1e-3:
                best, best_iou = view, iou
    assert best is not None
    return best


def dilate_square(m: np.ndarray, r: int) -> np.ndarray:
    """A boolean image dilated by a (2r+1)-square, by shifted ORs along each axis: what
    ``ndimage.maximum_filter`` gives (its reflecting border adds nothing to a maximum), 5-10x
    faster for the small radii of the input-view fit, which runs it a dozen times per image."""
    out = m.copy()
    for axis in (0, 1):
        src = out.copy()
        n = out.shape[axis]
        for k in range(1, min(r, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(k, None), slice(None, n - k)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def filled(m: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``m`` (..., h, w) with the pixels outside ``keep`` set to their nearest inside value."""
    if keep.all() or not keep.any():
        return m
    idx = ndimage.distance_transform_edt(~keep, return_distances=False, return_indices=True)
    return m[..., idx[0], idx[1]]


def sample_map(m: np.ndarray, x: np.ndarray, y: np.ndarray, s: float = ORTHO_S,
               dtype: type = np.float64) -> np.ndarray:
    """Bilinear value of map(s) ``m`` ((h, w) or (C, h, w)) at camera-plane (x, y), as ``dtype``."""
    mt = torch.from_numpy(np.ascontiguousarray(m, np.float32))
    mt = mt.view(1, -1, *m.shape[-2:])
    grid = torch.from_numpy(np.stack([np.asarray(x, np.float32) / s, -np.asarray(y, np.float32) / s], -1))
    # align_corners=False: -1/+1 are the map's outer edges, pixel centres at (j + 0.5) / w * 2 - 1
    out = F.grid_sample(mt, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)[0, :, 0]
    res = out.numpy().astype(dtype, copy=False)
    return res[0] if m.ndim == 2 else res


@dataclass
class Centres:
    """The other views' masked map pixel centres, computed once per image: per view (k, flat
    cell indices), all of them as world points and in the front camera. Why: the front depth's
    z-buffer, the hidden-surface estimate and the choice of cells to sample all start from them."""

    views: list[tuple[int, np.ndarray]]
    world: np.ndarray  # (N,3) float32
    cam: np.ndarray    # (N,3) float32, front camera


def map_points(depth_q: np.ndarray, logit: np.ndarray, R: np.ndarray, t: np.ndarray, k: int,
               s: float = ORTHO_S) -> tuple[np.ndarray, np.ndarray]:
    """View ``k``'s masked map cells (flat indices) and their centres at the median depth, in world."""
    h, w = logit.shape[-2:]
    gx, gy = (g.numpy().ravel() for g in ortho_pixel_grid(h, w, s))
    c = np.flatnonzero(logit[k].ravel() > 0)
    return c, to_world(gx[c], gy[c], depth_q[k, depth_q.shape[1] // 2].ravel()[c], R[k], t[k])


def centres(depth_q: np.ndarray, logit: np.ndarray, R: np.ndarray, t: np.ndarray, front: int,
            s: float = ORTHO_S) -> Centres:
    views, parts = [], []
    for k in range(len(R)):
        if k == front:
            continue
        c, world_k = map_points(depth_q, logit, R, t, k, s)
        if len(c):
            views.append((k, c))
            parts.append(world_k)
    world = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
    return Centres(views, world, matmul(world, R[front].T, t[front]).astype(np.float32))


def zbuffer(cam: np.ndarray, h: int, w: int, reduce: str, s: float = ORTHO_S) -> np.ndarray:
    """The nearest ("amin") or farthest ("amax") depth of front-camera points per front-map pixel,
    (h, w) float64, +-inf where none falls. By torch's scatter-reduce: ``np.minimum.at`` is 10x
    slower, for the same values."""
    c = np.floor((cam[:, 0] / s + 1) / 2 * w).astype(np.int64)
    r = np.floor((1 - cam[:, 1] / s) / 2 * h).astype(np.int64)
    ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
    out = torch.full((h * w,), np.inf if reduce == "amin" else -np.inf, dtype=torch.float64)
    out.scatter_reduce_(0, torch.from_numpy(r[ok] * w + c[ok]),
                        torch.from_numpy(-cam[ok, 2].astype(np.float64)), reduce)
    return out.numpy().reshape(h, w)


def front_depths(depth_q: np.ndarray, logit: np.ndarray, R: np.ndarray, t: np.ndarray, front: int,
                 s: float = ORTHO_S, cen: Centres | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two depths of the model surface seen from the input camera, on the front map's grid:

    - ``lifted``: the front view's own map where its mask is on; where it is off (a thin part
      that view missed) the nearest point of the other views' clouds (a z-buffer);
    - ``nearest``: the nearer of the front map and that z-buffer, but at most ``SEEN_BAND``
      in front of ``lifted``.

    Both nearest-filled outside. Why two: the picture is lifted onto the front view's own
    estimate (the nearest of six noisy estimates sits in front of the truth: val Chamfer 0.0772
    lifting on the nearest, 0.0767 on ``lifted``), while other views' points between the two
    are the same surface seen, kept in the picture's colours; only points in front of
    ``nearest`` are dropped (dropping all in front of ``lifted``: 0.0789; with no band limit
    0.0766, but a view that disagrees by more would leave a second copy of the picture
    floating in front). A part the front map lacks is lifted to where the other views put it,
    not floated at a neighbour's depth."""
    q = depth_q.shape[1] // 2
    h, w = logit.shape[-2:]
    fmask = logit[front] > 0
    cam = (cen if cen is not None else centres(depth_q, logit, R, t, front, s)).cam
    zb = zbuffer(cam, h, w, "amin", s)
    own = depth_q[front, q]
    out = []
    for d in (np.where(fmask, own, zb), np.where(fmask, np.minimum(own, zb), zb)):
        ok = np.isfinite(d)
        out.append(filled(np.where(ok, d, 0.0), ok).astype(np.float32) if ok.any()
                   else np.full((h, w), 2.0, np.float32))
    return out[0], np.maximum(out[1], out[0] - SEEN_BAND)


def rim_depth(cen: Centres, dlift: np.ndarray, s: float = ORTHO_S) -> np.ndarray:
    """Per front-map pixel, halfway between the lifted surface and the farthest of the other views'
    points on that ray (the model's back; nearest-filled where there is none). Why: a ray through
    the outline grazes the object, so the surface it meets there lies between the front and the
    back, where the front map alone (a 64x64 map's last pixels, nearest-filled past its edge) puts
    it on the front."""
    return halfway_back(dlift, cen.cam, s)


def halfway_back(own: np.ndarray, cam: np.ndarray, s: float = ORTHO_S) -> np.ndarray:
    """Per pixel of a view's depth map ``own`` (h, w), halfway between it and the farthest of the
    points ``cam`` (that view's camera frame) on the pixel's ray; the farthest depths
    nearest-filled where none falls, ``own`` where none falls at all."""
    h, w = own.shape
    far = zbuffer(cam, h, w, "amax", s)
    have = np.isfinite(far)
    if not have.any():
        return own
    back = filled(np.where(have, far, 0.0), have).astype(np.float32)
    return (0.5 * (own + np.maximum(back, own))).astype(np.float32)


RIM_GRID = 128  # the outline distance is measured on a grid of at most this many pixels a side


def outline_falloff(inside: np.ndarray, per_px: float) -> np.ndarray:
    """``inside`` (uint8, with a one-pixel ring of padding that says what lies past the edge) ->
    1 on the outline, falling by ``per_px`` per pixel inward (Euclidean: OpenCV's exact transform,
    6x faster than scipy's), 0 beyond; the padding ring dropped."""
    cv2 = _cv2()
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.clip(1 - (dist - np.float32(0.5)) * np.float32(per_px), 0, 1)


def rim_weight(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, band: float) -> np.ndarray:
    """1 for mask pixels on the outline, falling linearly to 0 at ``band`` pixels inside. The
    distance is measured on the mask in blocks of f x f pixels (a block is inside when all of it
    is), so a 512 px mask costs what a 128 px one does; the image border is not an outline."""
    cv2 = _cv2()
    h, w = mask.shape
    f = max(1, -(-max(h, w) // RIM_GRID))
    hb, wb = -(-h // f), -(-w // f)
    full = np.pad(mask, ((1, hb * f - h + 1), (1, wb * f - w + 1)), constant_values=True)
    inside = full.astype(np.uint8)
    if f > 1:  # a block's mean is 1 only when all of it is inside (f * f <= 16: no rounding up)
        inside = cv2.resize(inside[1:-1, 1:-1] * np.uint8(255), (wb, hb), interpolation=cv2.INTER_AREA)
        inside = np.pad(inside == 255, 1, constant_values=True).astype(np.uint8)
    if inside.all():  # no outline in the picture (the object fills it): nothing bends
        return np.zeros(len(rows))
    wgt = outline_falloff(inside, f / max(band, 1e-6))  # f = 1: exact
    if f > 1:  # back to pixels, each block's value in all of its pixels
        wgt = cv2.resize(wgt, (wb * f, hb * f), interpolation=cv2.INTER_NEAREST)
    return wgt[rows, cols]


def view_rims(cells: list[tuple[int, np.ndarray]], depth_q: np.ndarray, logit: np.ndarray, R: np.ndarray,
              t: np.ndarray, world: np.ndarray, band: float, s: float = ORTHO_S
              ) -> tuple[np.ndarray, np.ndarray]:
    """For the unseen side's views, what ``rim_depth`` and ``rim_weight`` are for the picture:
    per view and map cell (flat, views stacked), the depth halfway between the view's own map and
    the farthest of all the model's points (``world``) on that cell's ray, and a weight that is
    1 - (distance to the view's mask outline - 0.5) / ``band`` (map pixels), 0 beyond. Why: each
    fixed view's map, too, puts its outline on its own front where its rays graze the object."""
    q = depth_q.shape[1] // 2
    rims, wts = [], []
    for k, _ in cells:
        rims.append(halfway_back(depth_q[k, q], matmul(world, R[k].T, t[k]).astype(np.float32), s).ravel())
        inside = np.pad(logit[k] > 0, 1).astype(np.uint8)  # past the map's edge: outside
        wts.append(outline_falloff(inside, 1.0 / band).ravel())
    return np.concatenate(rims), np.concatenate(wts)


MAX_STRETCH = 4.0


def surface_stretch(depth: np.ndarray, s: float = ORTHO_S) -> np.ndarray:
    """Surface area per unit of image area, sqrt(1 + |grad depth|^2), capped at ``MAX_STRETCH``
    (a depth edge is not a surface). Why: a face seen at a grazing angle covers few pixels but is
    large in 3D; points spread per pixel would leave it full of holes from any other view."""
    pitch = 2 * s / depth.shape[-1]
    gy, gx = np.gradient(depth.astype(np.float64), pitch)
    return np.minimum(np.sqrt(1 + gx * gx + gy * gy), MAX_STRETCH)


def matmul(a: np.ndarray, m: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``a @ m (+ b)`` for many points, a small matrix and a row vector, in ``a``'s dtype, by
    torch. Why: numpy's OpenBLAS starts its own thread pool for it, ignoring the backend's thread
    setting; on a busy machine those threads spin, and a 3x3 transform of 100k points takes 30 ms
    instead of 1. As N products of a row and the matrix (a batched matmul): the same bits as one
    (N,3) x (3,3) GEMM (``addmm``), 2-4x faster, since BLAS handles so skinny a GEMM poorly; the
    offset is added in place after it (numpy broadcasting a 3-vector over (N,3) rows is slower)."""
    ta = torch.from_numpy(np.ascontiguousarray(a))
    tm = torch.from_numpy(np.ascontiguousarray(m, a.dtype))
    out = torch.matmul(ta.unsqueeze(1), tm).squeeze(1)
    if b is not None:
        out += torch.from_numpy(np.ascontiguousarray(b, a.dtype))
    return out.numpy()


def to_world(x: np.ndarray, y: np.ndarray, d: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    cam = np.stack([x, y, -d], -1)  # (cam - t) @ R, as one fused product
    return matmul(cam, R, -(t.astype(cam.dtype) @ R.astype(cam.dtype))).astype(np.float32)


def tone_match(src: np.ndarray, ref: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per channel, map ``target`` by the affine that takes ``src``'s mean/std to ``ref``'s.
    Why: the model predicts unshaded albedo (what its training colours are), the photo is shaded;
    the hidden side must not come out brighter than the side the camera saw."""
    if len(src) == 0 or len(ref) == 0:
        return target
    src, ref = np.ascontiguousarray(src.T), np.ascontiguousarray(ref.T)  # per channel: rows, fast
    ms, ss = src.mean(1), src.std(1)
    mr, sr = ref.mean(1), ref.std(1)
    gain = np.where(ss > 2.0, np.clip(sr / np.maximum(ss, 1e-6), 0.25, 4.0), 1.0)
    dt = target.dtype
    return np.clip(target * gain.astype(dt) + (mr - ms * gain).astype(dt), 0, 255)


def lift(image: np.ndarray, alpha: np.ndarray, depth_q: np.ndarray, logit: np.ndarray,
         rgb: np.ndarray, R: np.ndarray, t: np.ndarray, density: int, seed: int = 0,
         work_size: int = WORK_SIZE, s: float = ORTHO_S) -> tuple[np.ndarray, np.ndarray, dict]:
    """One image + the model's fixed-view maps -> (xyz (N,3) float32, rgb (N,3) uint8, info).

    ``depth_q`` (V,Q,h,w), ``logit`` (V,h,w), ``rgb`` (V,3,h,w) in [0,1], cameras R (V,3,3),
    t (V,3); ``alpha`` (H,W) in [0,1] is the object mask of ``image``. N == ``density`` unless
    the image and the model together have fewer distinct places to put points (never here: extra
    points are jittered inside pixels). ``info`` holds the fitted ``InputView`` and the counts.
    """
    rng = np.random.default_rng(seed)
    front = int(np.argmax(R[:, 2, 2]))  # the view on +z, looking down -z: the input's
    Rf, tf = R[front], t[front]
    fmask = logit[front] > 0
    cen = centres(depth_q, logit, R, t, front, s)
    dlift, dnear = front_depths(depth_q, logit, R, t, front, s, cen)
    h, w = alpha.shape
    n_full = int((alpha > 0.5).sum())
    if n_full == 0:
        raise ValueError("no object found in the image (empty mask)")
    # model candidates at the map pixel centres tell how much hidden surface there is
    vis_px = fmask.sum()
    behind = _behind(cen.cam, dnear, s)
    hid_px = int(behind.sum())
    share = float(np.clip(vis_px / max(vis_px + hid_px, 1), *VISIBLE_SHARE)) if hid_px else 1.0
    n_vis = int(round(density * share))
    scale = min(1.0, work_size / max(h, w), float(np.sqrt(n_vis / n_full)) * 0.97)
    wrgb, wmask = working_image(image, alpha, scale)
    if not wmask.any():  # a tiny object vanished in the downscale: keep it at full size
        wrgb, wmask, scale = np.asarray(image)[..., :3], alpha > 0.5, 1.0
    if is_photo(image):
        wrgb = unmixed_outline(wrgb, wmask)
    view = fit_input_view(wmask, fmask, dnear, s)
    # 1. lifted visible surface: every working pixel once, then extra ones at random, jittered
    rows, cols = np.nonzero(wmask)
    n_vis = min(max(n_vis, len(rows)), density)  # every working pixel gets its point
    pick = np.arange(len(rows))
    if n_vis > len(pick):  # extra points where the surface is steep: it is larger than its pixel
        cx, cy = view.to_plane(cols + 0.5, rows + 0.5)
        area = sample_map(surface_stretch(dlift, s), cx, cy, s)
        cum = np.cumsum(area)
        m = n_vis - len(pick)  # systematic sampling: sorted queries, no clumps
        extra = np.searchsorted(cum, (np.arange(m) + rng.random()) * (cum[-1] / m))
        pick = np.concatenate([pick, np.minimum(extra, len(rows) - 1)])
    elif n_vis < len(pick):
        pick = np.sort(rng.choice(len(pick), n_vis, replace=False))
    rim = rim_depth(cen, dlift, s) if RIM_BAND > 0 else None
    band = RIM_BAND * (2 * s / fmask.shape[1]) / view.a  # in working pixels

    def lift_pixels(r: np.ndarray, c: np.ndarray, jc: np.ndarray, jr: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Working pixels (r, c), at the spots (jc, jr) inside them, onto the lifted surface; near
        the outline, where the ray grazes the object, bent toward the middle of front and back."""
        x, y, d = view.lift(jc, jr, dlift, s)
        if rim is None:
            return x, y, d
        wgt = rim_weight(wmask, r, c, band)
        near = np.flatnonzero(wgt > 0)
        if len(near):
            xr, yr, dr = view.lift(jc[near], jr[near], rim, s)
            k = wgt[near]
            x[near] += k * (xr - x[near])
            y[near] += k * (yr - y[near])
            d[near] += k * (dr - d[near])
        return x, y, d

    pr, pc = rows[pick], cols[pick]
    jc = pc + rng.random(len(pick))
    x, y, d = lift_pixels(pr, pc, jc, pr + rng.random(len(pick)))
    vis_xyz = to_world(x, y, d, Rf, tf)
    vis_rgb = wrgb[pr, pc]
    # 2. hidden surface from the model, carved by the mask and by the lifted surface
    n_back = density - len(vis_xyz)
    sub = slice(None, None, max(1, len(x) // 8192))
    model_front = sample_map(filled(rgb[front], fmask), x[sub], y[sub], s).T * 255
    ref_rgb = vis_rgb[:len(x)][sub].astype(np.float64)
    if HIDDEN_COLOUR == "picture" and cen.views:  # the unseen side in the picture's colours
        rgb = picture_colours(rgb, cen, x[sub], y[sub], ref_rgb, model_front, s)
    carve_mask = ndimage.binary_dilation(wmask, iterations=CARVE_TOL_PX) if CARVE_TOL_PX else wmask
    alive = _behind(cen.cam, dnear, s, -FRONT_TOL) if NEAR_KEEP else behind
    back_xyz, back_rgb, near = _hidden_points(depth_q, logit, rgb, R, t, cen, alive, dnear, dlift,
                                              view, carve_mask, n_back, rng, s, wmask, wrgb)
    if len(back_xyz) < n_back:  # not enough hidden surface: the density goes to the visible side
        extra = rng.integers(0, len(rows), n_back - len(back_xyz))
        jc = cols[extra] + rng.random(len(extra))
        xe, ye, de = lift_pixels(rows[extra], cols[extra], jc, rows[extra] + rng.random(len(extra)))
        vis_xyz = np.concatenate([vis_xyz, to_world(xe, ye, de, Rf, tf)])
        vis_rgb = np.concatenate([vis_rgb, wrgb[rows[extra], cols[extra]]])
    # 3. hidden colours, 0-255: the picture's already, or the model's toned like the visible ones
    # (model front colours vs the photo's; a regular subset of ~8k points has the same statistics)
    back_rgb = back_rgb * 255
    if len(back_rgb) and HIDDEN_COLOUR != "picture":
        seen = back_rgb[near]  # the picture's own colours: not toned
        back_rgb = tone_match(model_front, ref_rgb, back_rgb)
        back_rgb[near] = seen
    # 4. the visible side's mirror image, where the picture allows it, takes over part of the unseen side
    plane = None
    if MIRROR and len(back_xyz):
        back_xyz, back_rgb, plane = mirror_side(vis_xyz, vis_rgb, back_xyz, back_rgb, view, carve_mask,
                                                wmask, dlift, Rf, tf, rng, s)
    xyz = np.concatenate([vis_xyz, back_xyz]).astype(np.float32)
    col = np.concatenate([vis_rgb, np.round(back_rgb).astype(np.uint8).reshape(-1, 3)])
    info = {"view": view, "scale": scale, "visible": len(vis_xyz), "hidden": len(back_xyz),
            "mirror": plane}
    return xyz, col, info


def mirror_side(vis_xyz: np.ndarray, vis_rgb: np.ndarray, back_xyz: np.ndarray, back_rgb: np.ndarray,
                view: InputView, carve_mask: np.ndarray, mask: np.ndarray, dlift: np.ndarray,
                Rf: np.ndarray, tf: np.ndarray, rng: np.random.Generator, s: float = ORTHO_S
                ) -> tuple[np.ndarray, np.ndarray, symmetry.Plane | None]:
    """The hidden points, where the visible points' mirror images (``symmetry.find_plane``) fall
    inside the mask and behind the lifted surface, replaced by those images in the picture's
    colours; as many points as before. Why replace, not add: two estimates of one surface a few
    voxels apart render speckled (val F@2%: replacing in cells of 1/64 of the cloud and a uniform
    third of a mix both +0.0036, cells of 1/24 +0.0015). Inside the mask itself, not the carving
    tolerance: no snapping needed, and the same gain.
    Returns the plane, or None where no plane is cheap enough to be a symmetry."""
    Rf32, tf32 = Rf.astype(np.float32), tf.astype(np.float32)

    def camera(p: np.ndarray) -> np.ndarray:
        return matmul(np.ascontiguousarray(p.reshape(-1, 3), np.float32), Rf32.T, tf32)

    def rules_out(p: np.ndarray) -> np.ndarray:  # outside the carving mask, or in front of the picture
        cam = camera(p)
        seen = _in_mask(cam, view, carve_mask)[0] & _behind(cam, dlift, s, -FRONT_TOL)
        return ~seen.reshape(p.shape[:-1])

    plane = symmetry.find_plane(np.concatenate([vis_xyz, back_xyz]), vis_xyz, rules_out, rng)
    if plane.cost > symmetry.MAX_COST:
        return back_xyz, back_rgb, None
    # at most as many visible points as the hidden side holds are mirrored: more would cost time alone
    nb, nv = len(back_xyz), len(vis_xyz)
    src = np.sort(rng.choice(nv, nb, replace=False)) if nv > nb else np.arange(nv)
    # a fixed priority per candidate and per model point: where float noise flips one point's test
    # (a batched forward against a single one), one pick changes, not the whole draw
    mirror_first, model_first = rng.random(len(src)), rng.random(nb)
    r = symmetry.reflect(vis_xyz[src], plane.n.astype(np.float32), np.float32(plane.d))
    cam = camera(r)
    keep = np.flatnonzero(_in_mask(cam, view, mask)[0] & _behind(cam, dlift, s))
    if not len(keep):
        return back_xyz, back_rgb, plane
    # a model point in a cell (of MIRROR_CELLS across the cloud) that a mirrored point reaches
    # gives way; as many mirrored points as went, by priority, take their place
    g = MIRROR_CELLS
    mirrored = r[keep]
    both = torch.from_numpy(np.concatenate([back_xyz, mirrored]))
    lo_t, hi_t = torch.aminmax(both, dim=0)  # numpy's reduction down 3-wide rows is 5x slower
    span = float((hi_t - lo_t).max()) * (1 + 1e-6) + 1e-9

    def cell(p: np.ndarray) -> np.ndarray:  # by torch: numpy's (N, 3) arithmetic is 2-3x slower
        i = ((torch.from_numpy(p) - lo_t) / span * g).to(torch.int64).clamp_(0, g - 1)
        return ((i[:, 0] * g + i[:, 1]) * g + i[:, 2]).numpy()

    reached = np.zeros(g ** 3, bool)
    reached[cell(mirrored)] = True
    old = np.flatnonzero(~reached[cell(back_xyz)])
    n_new = min(nb - len(old), len(keep))
    new = np.sort(keep[np.argsort(mirror_first[keep], kind="stable")[:n_new]])
    if len(old) + len(new) < nb:  # fewer mirrored points than places freed: some model points stay
        freed = np.setdiff1d(np.arange(nb), old)
        back = freed[np.argsort(model_first[freed], kind="stable")[:nb - len(old) - len(new)]]
        old = np.sort(np.concatenate([old, back]))
    return (np.concatenate([back_xyz[old], r[new]]),
            np.concatenate([back_rgb[old], vis_rgb[src[new]].astype(back_rgb.dtype)]), plane)


def picture_colours(rgb: np.ndarray, cen: Centres, ref_x: np.ndarray, ref_y: np.ndarray,
                    ref_rgb: np.ndarray, model_front: np.ndarray, s: float = ORTHO_S) -> np.ndarray:
    """The other views' colour maps with each masked cell recoloured by a picture colour: of the
    picture's colours around where the cell projects into the input view (a window of
    ``HIDDEN_WINDOW`` cells either side on a ``HIDDEN_GRID``-square grid), the one nearest the
    model's colour for the cell (toned to the picture). Why: the model's colours for the unseen
    side are a blur of the object's colours, which toning stretches into hues the picture never
    had (a yellow and blue car got a teal back; hue error on hidden points halves, measured
    against the shapes' albedo); the model still says which of the picture's colours goes where.
    By projection, not 3D nearest neighbours: a k-d tree query from the back to the front surface
    costs 30-50 ms, this 4-6 ms (and the hidden points are no longer toned one by one: the lift
    takes as long as before)."""
    g, win = HIDDEN_GRID, HIDDEN_WINDOW

    def cell(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # camera plane -> (row, col)
        return (np.clip(((1 - y / s) * (g / 2)).astype(np.int64), 0, g - 1),
                np.clip(((x / s + 1) * (g / 2)).astype(np.int64), 0, g - 1))

    ri, ci = cell(ref_x, ref_y)
    grid = np.zeros((3, g, g), np.float32)
    have = np.zeros((g, g), bool)
    grid[:, ri, ci] = ref_rgb.T  # one representative colour per grid cell
    have[ri, ci] = True
    grid = np.pad(filled(grid, have), ((0, 0), (win, win), (win, win)), mode="edge")
    grid = np.ascontiguousarray(grid.reshape(3, -1).T)  # (cells, 3)
    qr, qc = (q + win for q in cell(cen.cam[:, 0], cen.cam[:, 1]))  # in the padded grid
    d = np.arange(-win, win + 1)
    nb = ((qr[:, None, None] + d[:, None]) * (g + 2 * win) + qc[:, None, None] + d).reshape(len(qr), -1)
    model = np.concatenate([rgb[view].reshape(3, -1)[:, c] for view, c in cen.views], 1).T
    want = tone_match(model_front, ref_rgb, model * 255).astype(np.float32)
    cand = torch.from_numpy(grid)[torch.from_numpy(nb)]  # (cells, window, 3); torch: numpy's
    # broadcasting over 3-wide rows is 3x slower
    best = (cand - torch.from_numpy(want)[:, None, :]).abs().sum(-1).argmin(1)
    pick = (cand[torch.arange(len(cand)), best] / 255).numpy()
    out = rgb.copy()
    off = 0
    for view, c in cen.views:
        out[view].reshape(3, -1)[:, c] = pick[off:off + len(c)].T
        off += len(c)
    return out


def ring_offsets(r: int) -> list[tuple[int, int]]:
    """Pixel offsets within ``r`` (a square), nearest first (ties: same row, then below, right)."""
    r = max(r, 1)
    off = [(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1) if dr or dc]
    return sorted(off, key=lambda o: (o[0] ** 2 + o[1] ** 2, abs(o[0]), -o[0], -o[1]))


def snap_inside(p: np.ndarray, view: InputView, mask: np.ndarray, Rf: np.ndarray, tf: np.ndarray
                ) -> np.ndarray:
    """Points kept by the carving tolerance that project just outside the mask move, at their
    depth, onto the neighbouring mask pixel (the same sub-pixel spot in it): a shift under a
    working pixel that keeps the input-view silhouette the mask's own."""
    cam = matmul(p.astype(np.float64), Rf.T, tf)
    d = -cam[:, 2]
    c, r = view.to_pixels(cam[:, 0], cam[:, 1], d)
    h, w = mask.shape
    ci = np.clip(np.floor(c).astype(np.int64), 0, w - 1)
    ri = np.clip(np.floor(r).astype(np.int64), 0, h - 1)
    out = ~mask[ri, ci]
    if not out.any():
        return p
    idx = np.flatnonzero(out)
    fc, fr = c[idx] - np.floor(c[idx]), r[idx] - np.floor(r[idx])
    # the nearest mask pixel depends on the pixel alone: found once per distinct pixel (a few
    # thousand round the outline) rather than once per point
    pix, inv = np.unique(ri[idx] * w + ci[idx], return_inverse=True)
    pr, pc = np.divmod(pix, w)
    off = np.array(ring_offsets(CARVE_TOL_PX))  # nearest first, out to the carving tolerance
    rr = np.clip(pr[:, None] + off[:, 0], 0, h - 1)  # (pixels, offsets)
    cc = np.clip(pc[:, None] + off[:, 1], 0, w - 1)
    inside = mask[rr, cc]
    first = inside.argmax(1)  # the nearest offset in the mask; none: the pixel stays
    any_in = inside[np.arange(len(pix)), first]
    nr = np.where(any_in, rr[np.arange(len(pix)), first], pr)
    nc = np.where(any_in, cc[np.arange(len(pix)), first], pc)
    x, y = view.to_plane(nc[inv] + fc, nr[inv] + fr, d[idx])
    q = p.copy()
    q[idx] = to_world(x, y, d[idx], Rf, tf)
    return q


def _behind(cam: np.ndarray, depth: np.ndarray, s: float, tol: float = FRONT_TOL) -> np.ndarray:
    """Front-camera points farther than the surface ``depth`` (+ ``tol``): not seen."""
    return -cam[:, 2] > sample_map(depth, cam[:, 0], cam[:, 1], s) + tol


def _in_mask(cam: np.ndarray, view: InputView, carve_mask: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Which front-camera points project inside the (dilated) mask, and their flat pixel index
    in it (-1 outside the image)."""
    c, r = view.to_pixels(cam[:, 0], cam[:, 1], -cam[:, 2])
    h, w = carve_mask.shape
    ci, ri = np.floor(c).astype(np.int64), np.floor(r).astype(np.int64)
    flat = np.where((ci >= 0) & (ci < w) & (ri >= 0) & (ri < h), ri * w + ci, -1)
    return (flat >= 0) & carve_mask.ravel()[np.maximum(flat, 0)], flat


def _hidden_points(depth_q, logit, rgb, R, t, cen: Centres, behind: np.ndarray, dnear, dlift, view,
                   carve_mask, n, rng, s, mask=None, wrgb=None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points (or fewer when the model has none) drawn at jittered sub-pixel positions of
    the back views' masked cells (bilinear depth/colour, no curtains over depth edges), kept
    inside the carving mask and behind the lifted surface ``dlift``, or on it or in front of it
    but not in front of ``dnear`` (``NEAR_KEEP``: seen by the camera, so only inside the mask and
    in the picture's colour; ``near`` marks them).

    All views are sampled in one pass: their maps (Q depths + 3 colours, nearest-filled outside
    the mask, one pixel of edge padding, which is grid_sample's border mode) are stacked into
    one tall image, so a point's bilinear look-up is one ``grid_sample`` call for all of them."""
    empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, bool)
    if n <= 0 or not cen.views:
        return empty
    front = int(np.argmax(R[:, 2, 2]))
    Rf, tf = R[front], t[front]
    v, q, h, w = depth_q.shape
    alive = behind & _in_mask(cen.cam, view, carve_mask)[0]
    cells, off = [], 0
    for k, c in cen.views:  # map pixels whose centre survives (and their neighbours, for the jitter)
        live = np.zeros(h * w, bool)
        live[c[alive[off:off + len(c)]]] = True
        off += len(c)
        live = ndimage.binary_dilation(live.reshape(h, w)).ravel() & (logit[k].ravel() > 0)
        if live.any():
            cells.append((k, np.flatnonzero(live)))
    if not cells:
        return empty
    sizes = np.array([len(c) for _, c in cells], np.float64)
    if HIDDEN_RIM > 0:  # the model's points in the front view too: the far side of the back view's rays
        world = np.concatenate([cen.world, map_points(depth_q, logit, R, t, front, s)[1]])
        rim_all, wt_all = view_rims(cells, depth_q, logit, R, t, world, HIDDEN_RIM, s)
    stack = np.stack([filled(np.concatenate([depth_q[k], rgb[k]]), logit[k] > 0) for k, _ in cells])
    nv, nc = len(cells), q + 3
    big = np.pad(stack, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")  # (nv, nc, h+2, w+2)
    big_t = torch.from_numpy(np.ascontiguousarray(
        big.transpose(1, 0, 2, 3).reshape(1, nc, nv * (h + 2), w + 2), np.float32))
    # per view, view camera -> front camera in one affine: fc = cam @ A_k + b_k
    Rf64, tf64 = Rf.astype(np.float64), tf.astype(np.float64)
    aff = [((R[k].astype(np.float64) @ Rf64.T).astype(np.float32),
            (tf64 - t[k].astype(np.float64) @ R[k] @ Rf64.T).astype(np.float32)) for k, _ in cells]
    tf32, Rf32 = tf64.astype(np.float32), Rf64.astype(np.float32)  # the points are float32 anyway
    depths = np.stack([dlift, dnear])
    xyz_parts, rgb_parts, near_parts, got, want = [], [], [], 0, n * 1.15
    near_ok = NEAR_KEEP and mask is not None and wrgb is not None
    for _ in range(4):
        counts = rng.multinomial(int(want), sizes / sizes.sum())
        m = int(counts.sum())
        slot = np.repeat(np.arange(nv), counts)
        flat = np.concatenate([c[rng.integers(0, len(c), mk)] for (_, c), mk in zip(cells, counts)])
        r, cc = np.divmod(flat, w)
        u = cc + rng.random(m, np.float32)  # continuous map pixel coordinates
        vv = r + rng.random(m, np.float32)
        grid = np.empty((m, 2), np.float32)
        grid[:, 0] = (u + 1) * (2 / (w + 2)) - 1
        grid[:, 1] = (slot * (h + 2) + 1 + vv) * (2 / (nv * (h + 2))) - 1
        vals = F.grid_sample(big_t, torch.from_numpy(grid).view(1, 1, m, 2), mode="bilinear",
                             padding_mode="border", align_corners=False)[0, :, 0].numpy()
        d = vals[rng.integers(0, q, m), np.arange(m)] if q > 1 else vals[0]
        if DEPTH_JUMP is not None:  # across a depth edge, the cell's own depth (no curtain)
            own = stack[:, q // 2].reshape(-1)[slot * (h * w) + flat]
            d = np.where(np.abs(d - own) > DEPTH_JUMP, own, d)
        if HIDDEN_RIM > 0:  # near its view's outline, toward the middle of that view's front and back
            ci = slot * (h * w) + flat
            d = d + wt_all[ci] * (rim_all[ci] - d)
        cam = np.empty((m, 3), np.float32)
        cam[:, 0] = u * (2 * s / w) - s
        cam[:, 1] = s - vv * (2 * s / h)
        cam[:, 2] = -d
        fc = np.empty_like(cam)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for j, (A, b) in enumerate(aff):
            sl = slice(bounds[j], bounds[j + 1])
            fc[sl] = matmul(cam[sl], A, b)
        ok, pix = _in_mask(fc, view, carve_mask)
        dist = -fc[:, 2][ok]  # column first: a row gather of (N,3) is 4x slower
        both = sample_map(depths, fc[:, 0][ok], fc[:, 1][ok], s, np.float32)
        gap = dist - both[0]  # behind the lifted surface
        near = np.zeros(m, bool)
        if near_ok:  # on the lifted surface (within FRONT_TOL) or in front of it but not of the
            # nearest model surface: seen by the camera, kept where the picture has it, its colour
            front_of = dist - both[1]
            near[ok] = gap <= FRONT_TOL
            ok[ok] = (front_of > -FRONT_TOL) & ((gap > FRONT_TOL) | mask.ravel()[pix[ok]])
        else:
            ok[ok] = gap > FRONT_TOL
        idx = np.flatnonzero(ok)
        if got + len(idx) > n:  # a uniform subset (samples come view by view: no truncation)
            drop = np.zeros(len(idx), bool)
            drop[rng.choice(len(idx), got + len(idx) - n, replace=False)] = True
            idx = idx[~drop]
        p = matmul(np.take(fc, idx, 0), Rf32, -(tf32 @ Rf32))  # back to the world (Rf orthonormal)
        if mask is not None and len(p):  # kept by the tolerance, outside the mask: snapped in
            out = np.flatnonzero(~mask.ravel()[pix[idx]])
            if len(out):
                p[out] = snap_inside(np.take(p, out, 0), view, mask, Rf, tf)
        xyz_parts.append(p)
        col = np.take(vals[q:q + 3], idx, 1).T
        nr = near[idx]
        if nr.any():  # seen by the camera: the picture's colour (0-1 like the model's)
            col[nr] = np.take(wrgb.reshape(-1, 3), pix[idx[nr]], 0) / np.float32(255)
        rgb_parts.append(col)
        near_parts.append(nr)
        got += len(p)
        if got >= n:
            break
        rate = len(p) / max(m, 1)
        if rate < 1e-3:
            break
        want = (n - got) / rate * 1.2
    if not xyz_parts:
        return empty
    return np.concatenate(xyz_parts), np.concatenate(rgb_parts), np.concatenate(near_parts)
