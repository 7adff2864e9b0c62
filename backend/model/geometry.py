"""Camera maths, fuse3D and the pseudo-renderer (Lin, Kong & Lucey 2018), as pure torch functions.

Conventions (OpenGL/Blender): a camera looks down its -z axis, x right, y up. A camera is a
rotation ``R`` (world->camera) and translation ``t`` with ``p_cam = R @ p_world + t``. Fixed and
novel views are *orthographic*: pixel (u, v) (u = column, v = row from the top) of an ``H x W`` map
covers camera-plane x in [-s, s] left->right and y in [s, -s] top->bottom, where ``s`` is the ortho
half-extent. Depth is the distance along the viewing axis, ``d = -z_cam`` (> 0 in front).
All world coordinates are in the viewer-centred output frame "viewer-unit-ball/v1".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Fixed/novel ortho cameras sit CAM_DIST from the origin and see the unit ball (half-extent ORTHO_S).
CAM_DIST = 2.0
ORTHO_S = 1.05


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None,
            up: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World->camera (R, t) for cameras at ``eye`` (..., 3) looking at ``target``, -z forward.

    Why: one helper for every camera so that data, losses and tests share one convention.
    ``up`` defaults to +y; where the view is (nearly) parallel to it, +z is used instead.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64 if not torch.is_tensor(eye) else eye.dtype)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target).to(eye).expand_as(eye)
    up_t = torch.tensor([0.0, 1.0, 0.0]).to(eye) if up is None else torch.as_tensor(up).to(eye)
    up_t = up_t.expand_as(eye)
    z = F.normalize(eye - target, dim=-1)  # camera +z points from target to eye
    alt = torch.tensor([0.0, 0.0, 1.0]).to(eye).expand_as(eye)
    parallel = (torch.cross(up_t, z, dim=-1).norm(dim=-1, keepdim=True) < 1e-6)
    up_t = torch.where(parallel, alt, up_t)
    x = F.normalize(torch.cross(up_t, z, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=-2)  # rows are camera axes in world coordinates
    t = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    return R, t


LAYOUTS = {"corners": 8, "axis": 6}


def fixed_views(n: int | None = None, dist: float = CAM_DIST, layout: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The N fixed viewpoints. Layouts: "corners", the 8 cube corners (+-1,+-1,+-1)/sqrt(3) of the
    paper; "axis", the 6 axis views of the viewer frame (front, back, right, left, top, bottom):
    each shares at least one image axis with the input view, so a conv decoder can draw it in the
    input's pixel layout (see ``layout_flips``). A layout alone sets N; without one, N == 8 (the
    default) means corners and other N a Fibonacci sphere. Returns R (N,3,3), t (N,3) in float32."""
    if n is None:
        n = LAYOUTS[layout] if layout is not None else 8
    layout = layout or ("corners" if n == 8 else None)
    if layout is not None and LAYOUTS.get(layout) != n:
        raise ValueError(f"fixed-view layout {layout!r} has {LAYOUTS.get(layout)} views, not {n}")
    if layout == "corners":
        dirs = torch.tensor([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)],
                            dtype=torch.float64) / math.sqrt(3.0)
    elif layout == "axis":
        dirs = torch.tensor([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]],
                            dtype=torch.float64)
    else:
        i = torch.arange(n, dtype=torch.float64) + 0.5
        phi = torch.acos(1 - 2 * i / n)
        theta = math.pi * (1 + 5 ** 0.5) * i
        dirs = torch.stack([torch.sin(phi) * torch.cos(theta), torch.cos(phi),
                            torch.sin(phi) * torch.sin(theta)], -1)
    R, t = look_at(dirs * dist)
    return R.float(), t.float()


def layout_flips(R: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view, whether its columns / rows run against the input image's (camera x along world
    -x / camera y along world -y). Why: a decoder draws every view in the input's pixel layout,
    where its U-Net skips line up with the image, and the map is mirrored into the view's own
    convention afterwards (a mirror is a global permutation no convolution can learn)."""
    return R[:, 0, 0] < -eps, R[:, 1, 1] < -eps


def mirror_permutation(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """For views made by ``look_at``: ``perm`` with view k of the mirrored object (x -> -x) equal to
    view ``perm[k]`` of the original with its columns flipped (same depths). Why: mirrored copies
    of a training sample are exact, new samples for free. ValueError if the set is not symmetric."""
    eyes = torch.einsum("nji,nj->ni", R.double(), -t.double())
    mirrored = eyes * torch.tensor([-1.0, 1.0, 1.0], dtype=eyes.dtype)
    d = torch.cdist(eyes, mirrored)  # d[k, j] = |eye_k - F eye_j|
    perm = d.argmin(1)
    if not torch.allclose(d[torch.arange(len(perm)), perm], torch.zeros(len(perm), dtype=d.dtype), atol=1e-6):
        raise ValueError("these fixed views are not symmetric under x -> -x")
    return perm


def random_views(n: int, generator: torch.Generator | None = None,
                 dist: float = CAM_DIST) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras uniformly on the sphere, looking at the origin (novel views for stage 2)."""
    d = F.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1)
    R, t = look_at(d * dist)
    return R.float(), t.float()


def ortho_pixel_grid(h: int, w: int, s: float = ORTHO_S, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-plane (x, y) of pixel centres, each (h, w): the inverse of the ortho intrinsics."""
    u = (torch.arange(w, dtype=dtype) + 0.5) / w * 2 - 1
    v = 1 - (torch.arange(h, dtype=dtype) + 0.5) / h * 2
    y, x = torch.meshgrid(v * s, u * s, indexing="ij")
    return x, y


def ortho_intrinsics(h: int, w: int, s: float = ORTHO_S) -> torch.Tensor:
    """3x3 K mapping camera (x, y, 1) -> pixel (u, v, 1) for the orthographic maps (u col, v row)."""
    return torch.tensor([[w / (2 * s), 0.0, w / 2], [0.0, -h / (2 * s), h / 2], [0.0, 0.0, 1.0]])


def persp_intrinsics(h: int, w: int, fov_deg: float) -> torch.Tensor:
    """3x3 K of a pinhole camera with horizontal field of view ``fov_deg`` (OpenGL: looks down -z,
    so a point projects with u = fx * x / (-z) + cx, v = -fy * y / (-z) + cy)."""
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def fuse3d(depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor, s: float = ORTHO_S) -> torch.Tensor:
    """Per-view depth maps (B, V, H, W) -> points (B, V*H*W, 3) in world frame.

    Why: the paper's fuse3D; every pixel of every fixed view becomes one 3D point, so the output is
    dense (V*H*W candidates); which ones are kept is decided by the mask logits outside this function.
    Differentiable w.r.t. depth.
    """
    b, v, h, w = depth.shape
    x, y = ortho_pixel_grid(h, w, s, depth.dtype)
    cam = torch.stack([x.expand(b, v, h, w), y.expand(b, v, h, w), -depth], dim=-1)  # (B,V,H,W,3)
    cam = cam.reshape(b, v, h * w, 3) - t.to(depth).view(1, v, 1, 3)
    world = cam @ R.to(depth).view(1, v, 3, 3)  # R^T applied to row vectors
    return world.reshape(b, v * h * w, 3)


_EMPTY = -1.0e4  # "no point here" in the max-buffers; far below any real -depth or logit


def render_depth(points: torch.Tensor, logits: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                 h: int, w: int, upscale: int = 3, s: float = ORTHO_S,
                 colors: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Pseudo-renderer: points (B,N,3) with mask logits (B,N) -> maps at K cameras R (B,K,3,3), t (B,K,3).

    Why / how (paper §3.3 with the TF code's semantics, see research §1.3 and §1.8):
    points are projected onto an upsampled (h*U, w*U) grid and rounded; on each sub-pixel the
    nearest *visible* point (logit > 0) wins via ``scatter_reduce('amax')`` of -depth (a z-buffer,
    not last-write-wins), and ``index_add_`` counts visible points per sub-pixel. U x U max-pooling
    brings maps back to (h, w); the pooled count is the ``collision`` map: the depth loss should
    use pixels with collision == 1 only. The mask logit of a sub-pixel is the max logit of any point
    that lands on it (so invisible points that should be visible get a gradient); empty pixels get
    a constant -1 logit and depth 0. Gradients flow to depth (via z) and logits (and colours);
    x/y rounding is not differentiable, as in the paper.
    Returns depth (B,K,h,w), mask_logit, collision and, if ``colors`` (B,N,3) is given, rgb (B,K,3,h,w).
    """
    b, n, _ = points.shape
    k = R.shape[1]
    hu, wu = h * upscale, w * upscale
    cam = points.unsqueeze(1) @ R.transpose(-1, -2) + t.unsqueeze(2)  # (B,K,N,3)
    u = ((cam[..., 0] / s + 1) * 0.5 * wu).detach().floor().long()
    v = ((1 - cam[..., 1] / s) * 0.5 * hu).detach().floor().long()
    negd = cam[..., 2]  # = -depth; larger is nearer
    inside = (u >= 0) & (u < wu) & (v >= 0) & (v < hu)
    cells = b * k * hu * wu
    base = torch.arange(b * k, device=points.device).view(b, k, 1) * (hu * wu)
    idx = torch.where(inside, base + v * wu + u, torch.full_like(u, cells)).reshape(-1)  # dump bin
    lg = logits.unsqueeze(1).expand(b, k, n)
    vis = (lg > 0) & inside
    idx_vis = torch.where(vis.reshape(-1), idx, torch.full_like(idx, cells))

    zbuf = torch.full((cells + 1,), _EMPTY, dtype=points.dtype, device=points.device)
    zbuf = zbuf.scatter_reduce(0, idx_vis, negd.reshape(-1), reduce="amax", include_self=True)
    cnt = torch.zeros(cells + 1, dtype=points.dtype, device=points.device)
    cnt = cnt.index_add(0, idx_vis, vis.reshape(-1).to(points.dtype))
    lbuf = torch.full((cells + 1,), _EMPTY, dtype=points.dtype, device=points.device)
    lbuf = lbuf.scatter_reduce(0, idx, lg.reshape(-1), reduce="amax", include_self=True)

    def grid(x: torch.Tensor) -> torch.Tensor:
        return x[:cells].view(b * k, 1, hu, wu)

    zmax, zarg = F.max_pool2d(grid(zbuf), upscale, return_indices=True)
    coll = F.max_pool2d(grid(cnt), upscale)
    lmax = F.max_pool2d(grid(lbuf), upscale)
    has_vis = zmax > _EMPTY / 2
    depth = torch.where(has_vis, -zmax, torch.zeros_like(zmax))
    mask_logit = torch.where(lmax > _EMPTY / 2, lmax, torch.full_like(lmax, -1.0))
    out = {"depth": depth.view(b, k, h, w), "mask_logit": mask_logit.view(b, k, h, w),
           "collision": coll.view(b, k, h, w)}
    if colors is not None:
        # colour of a sub-pixel = mean colour of the visible points at its z-buffer depth
        front = vis.reshape(-1) & (negd.reshape(-1) >= zbuf[idx_vis] - 1e-12)
        idx_f = torch.where(front, idx_vis, torch.full_like(idx_vis, cells))
        col = colors.unsqueeze(1).expand(b, k, n, 3).reshape(-1, 3)
        cbuf = torch.zeros(cells + 1, 3, dtype=colors.dtype, device=colors.device).index_add(0, idx_f, col)
        nf = torch.zeros(cells + 1, dtype=colors.dtype, device=colors.device).index_add(
            0, idx_f, front.to(colors.dtype))
        csub = (cbuf[:cells] / nf[:cells].clamp(min=1).unsqueeze(-1)).view(b * k, hu * wu, 3)
        pick = csub.gather(1, zarg.view(b * k, h * w, 1).expand(-1, -1, 3))  # winner sub-pixel
        rgb = pick.view(b, k, h, w, 3).permute(0, 1, 4, 2, 3) * has_vis.view(b, k, 1, h, w)
        out["rgb"] = rgb
    return out

