"""Automatic foreground for images without a usable alpha, and a check that the cut looks right.

Shipped method (measured against the alternatives by ``image2points eval-mask``, same run): a small
U-Net (``backend.model.segnet``, trained here on photo-like composites) gives a foreground
probability (mean over the image and its mirror), then again on the square around what it found
(``ZOOM_MARGIN`` times the object's box: a small object gets the net's full 128 px); inside that
square its confident parts seed OpenCV's GrabCut as a trimap, which snaps the edges to the
photo's colours at up to ``REFINE_SIDE`` pixels (its colour models see the object's surroundings,
not the whole frame); the largest pieces are kept and holes filled. Without the net's weights:
GrabCut seeded by a colour prior (a thin frame band is background, colours far from every border
colour cluster are probable object). On a flat studio background (``plain_background``) the
border rule is exact and is used. When the cut finds (next to) nothing, the old border rule's cut
is used, flagged by ``cut_warnings`` for the artist rather than refused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .islands import keep_large

SEG_SIDE = 200  # working side of the GrabCut pass (time ~ pixels * iterations)
REFINE_SIDE = 320  # working side of the GrabCut refinement of the net's trimap
BAND = 0.04  # frame band taken as sure background, fraction of the shorter side
ITERATIONS = 4
PRIOR_DIST = 40.0  # colour distance (0-255) from the nearest border cluster that hints "object"
KEEP_FRACTION = 0.15  # pieces smaller than this fraction of the largest are dropped


def _cv2():  # imported late: the border rule and the tests of other modules need no OpenCV
    """OpenCV, with its random generator reseeded: GrabCut and k-means draw from it, so without
    this the same photo cut twice in one process gave masks up to 0.06 IoU apart."""
    import cv2

    cv2.setNumThreads(1)
    cv2.setRNGSeed(0)
    return cv2


def _border_clusters(img: np.ndarray, band: int, k: int = 8) -> np.ndarray:
    """k colour centres of the frame band (k-means on at most 4000 pixels): the background model."""
    cv2 = _cv2()
    ring = np.concatenate([img[:band].reshape(-1, 3), img[-band:].reshape(-1, 3),
                           img[:, :band].reshape(-1, 3), img[:, -band:].reshape(-1, 3)])
    step = max(1, len(ring) // 4000)
    data = np.ascontiguousarray(ring[::step], np.float32)
    k = min(k, len(data))
    _, _, centres = cv2.kmeans(data, k, None, (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1.0),
                               1, cv2.KMEANS_PP_CENTERS)
    return centres


def _clean(fg: np.ndarray, p: np.ndarray | None = None, rgb: np.ndarray | None = None) -> np.ndarray:
    """Small pieces dropped, holes filled; with the net's probability ``p``, a hole the net sees
    as background (a ring's or a handle's opening) stays open, unless (with ``rgb``) its colours
    are the object's round it rather than the background's (``looks_like_object``)."""
    fg = keep_large(fg, KEEP_FRACTION)
    filled = ndimage.binary_fill_holes(fg)
    if p is None or not (holes := filled & ~fg).any():
        return filled
    lab, n = ndimage.label(holes)
    open_ = 1 + np.flatnonzero(ndimage.mean(p, lab, index=np.arange(1, n + 1)) < 0.5)
    if rgb is not None and len(open_):
        around = ndimage.binary_dilation(filled, iterations=HOLE_RING) & ~filled
        bg = few_colours(rgb, around)  # the background round the object
        boxes = ndimage.find_objects(lab)
        open_ = [k for k in open_ if not looks_like_object(rgb, lab, k, boxes[k - 1], fg, bg)]
    return filled & ~np.isin(lab, open_)


HOLE_RING = 4  # px: the object round a hole, and the background round the object, it is compared with
HOLE_SAMPLES = 400  # colours per set in that comparison (a regular subset)


def few_colours(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
    c = rgb[..., :3][m].astype(np.float32)
    return c[::max(1, len(c) // HOLE_SAMPLES)]


def looks_like_object(rgb: np.ndarray, lab: np.ndarray, k: int, box: tuple[slice, ...], fg: np.ndarray,
                      bg: np.ndarray) -> bool:
    """Whether a hole in the cut shows the object rather than what is behind it: its colours are
    on average nearer to the object's round the hole than to the background round the object
    (``bg``, colours).
    Why: a true opening (a handle's, a ring's) shows the background; the cut also opens holes
    where the net is unsure on the object's own surface (a highlight, a reflection), which are
    the object's colours. Nearest-colour distances, so a many-coloured object or background counts."""
    # hole ``k`` of ``lab``, in its box grown by the ring (a dilation of the whole frame per hole
    # would cost ~10 ms a megapixel)
    hh, ww = lab.shape
    sl = tuple(slice(max(0, b.start - HOLE_RING), min(n, b.stop + HOLE_RING)) for b, n in zip(box, (hh, ww)))
    hole = lab[sl] == k
    near = ndimage.binary_dilation(hole, iterations=HOLE_RING) & fg[sl]
    if not near.any() or not len(bg):
        return False
    inside, obj = few_colours(rgb[sl], hole), few_colours(rgb[sl], near)

    return float(colour_distance(inside, obj).mean()) < float(colour_distance(inside, bg).mean())


def colour_distance(colours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each of ``colours`` (N,3) to its nearest of ``ref`` (K,3), Euclidean (N,)."""
    return np.sqrt(((colours[:, None] - ref[None]) ** 2).sum(-1).min(1))


def grabcut(rgb: np.ndarray, iterations: int = ITERATIONS, side: int = SEG_SIDE) -> np.ndarray:
    """Mask (H,W) float32 in {0,1} of the object in an RGB photo (see the module docstring)."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    s = min(1.0, side / max(h, w))
    sh, sw = max(8, round(h * s)), max(8, round(w * s))
    small = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (sw, sh), interpolation=cv2.INTER_AREA) \
        if (sh, sw) != (h, w) else np.ascontiguousarray(rgb[..., :3])
    small = cv2.GaussianBlur(small, (3, 3), 0)
    band = max(1, round(BAND * min(sh, sw)))
    centres = _border_clusters(small, band)
    dist = colour_distance(small.astype(np.float32).reshape(-1, 3), centres).reshape(sh, sw)
    gc = np.where(dist > PRIOR_DIST, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[:band], gc[-band:], gc[:, :band], gc[:, -band:] = (cv2.GC_BGD,) * 4
    if not (gc == cv2.GC_PR_FGD).any():  # nothing differs from the border: no object to cut
        return np.zeros((h, w), np.float32)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small[..., ::-1].copy(), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models (e.g. a flat image): fall back to the prior
        pass
    fg = _clean((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD))
    if (sh, sw) == (h, w):
        return fg.astype(np.float32)
    up = cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return (up > 0.5).astype(np.float32)


_net: list = []  # the loaded SegNet, once (None when no weights are installed)


def _segnet():
    if not _net:
        from .model import segnet

        try:
            _net.append(segnet.load())
        except FileNotFoundError:
            _net.append(None)
    return _net[0]


ZOOM_MARGIN = 1.5  # the zoomed pass's square: this times the object's longer side


def zoom_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """The square (r0, r1, c0, c1) around the mask's box, ``margin`` times its longer side, kept
    inside the image; the whole image when that square would not fit. Shared with training
    (``segment_train``: zoomed composites)."""
    h, w = mask.shape
    rr, cc = np.nonzero(mask)
    if not len(rr):
        return 0, h, 0, w
    side = int(round(max(rr.max() + 1 - rr.min(), cc.max() + 1 - cc.min()) * margin))
    if side >= min(h, w):
        return 0, h, 0, w
    r0 = int(np.clip((rr.min() + rr.max() + 1 - side) // 2, 0, h - side))
    c0 = int(np.clip((cc.min() + cc.max() + 1 - side) // 2, 0, w - side))
    return r0, r0 + side, c0, c0 + side


def _net_pass(net, rgb: np.ndarray) -> np.ndarray:
    import torch

    from .model import segnet

    with torch.inference_mode():  # the mean over the image and its mirror (test-time flip)
        x = segnet.to_input(rgb)
        p = torch.sigmoid(net(torch.cat([x, x.flip(-1)])))
        p = (0.5 * (p[0, 0] + p[1, 0].flip(-1))).numpy()
    h, w = rgb.shape[:2]
    return _cv2().resize(p, (w, h), interpolation=_cv2().INTER_LINEAR)


def net_probability(rgb: np.ndarray, zoom: float | None = ZOOM_MARGIN) -> np.ndarray | None:
    """Foreground probability (H,W) float32 from the trained net; None without its weights.

    ``zoom``: a second pass on the square around the first pass's object, pasted over it. Why:
    the net sees 128x128, so an object filling a few percent of a photo gets a few hundred input
    pixels; zoomed, its thin parts and outline get the net's full resolution."""
    net = _segnet()
    if net is None:
        return None
    p = _net_pass(net, rgb)
    if zoom:
        r0, r1, c0, c1 = zoom_box(p > 0.5, zoom)
        if (r1 - r0, c1 - c0) != p.shape:
            p[r0:r1, c0:c1] = _net_pass(net, np.ascontiguousarray(rgb[r0:r1, c0:c1]))
    return p


def net_cut(rgb: np.ndarray, refine: bool = True) -> np.ndarray:
    """The net's mask (kept pieces, holes filled); ``refine``: GrabCut on its trimap (sure where
    the net is confident) for sharper edges. Falls back to ``grabcut`` without weights."""
    p = net_probability(rgb)
    if p is None:
        return grabcut(rgb)
    if not refine:
        return _clean(p > 0.5, p, rgb).astype(np.float32)
    fg = p > 0.5
    r0, r1, c0, c1 = zoom_box(fg, ZOOM_MARGIN)  # outside it the net's own cut (background) stands
    fg[r0:r1, c0:c1] = _grabcut_refine(np.ascontiguousarray(rgb[r0:r1, c0:c1, :3]), p[r0:r1, c0:c1])
    return _clean(fg, p, rgb).astype(np.float32)


def _grabcut_refine(rgb: np.ndarray, p: np.ndarray) -> np.ndarray:
    """GrabCut seeded by the net's trimap, at most ``REFINE_SIDE`` on the long side; (H,W) bool."""
    cv2 = _cv2()
    h, w = p.shape
    s = min(1.0, REFINE_SIDE / max(h, w))
    sh, sw = max(8, round(h * s)), max(8, round(w * s))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    ps = cv2.resize(p, (sw, sh), interpolation=cv2.INTER_AREA)
    gc = np.select([ps > 0.95, ps > 0.5, ps > 0.05], [cv2.GC_FGD, cv2.GC_PR_FGD, cv2.GC_PR_BGD],
                   cv2.GC_BGD).astype(np.uint8)
    if (gc == cv2.GC_FGD).any() and (gc == cv2.GC_BGD).any():
        try:
            cv2.grabCut(small[..., ::-1].copy(), gc, None, np.zeros((1, 65)), np.zeros((1, 65)), 2,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            pass
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


PLAIN_SPREAD = 12.0  # 95th percentile colour distance (0-255) of the frame from its median colour


def plain_background(rgb: np.ndarray) -> bool:
    """True when the image's outer frame is one flat colour (a studio or paper background)."""
    img = rgb[..., :3].astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    d = np.linalg.norm(border - np.median(border, axis=0), axis=-1)
    return float(np.percentile(d, 95)) < PLAIN_SPREAD


def segment(rgb: np.ndarray) -> np.ndarray:
    """The automatic foreground used for images without a usable alpha channel.

    When GrabCut finds (next to) nothing, e.g. the object runs into the frame so the border
    colours include its own, the border rule's cut is used instead: a reconstruction the artist
    can judge, flagged by ``cut_warnings``, rather than a refusal."""
    rule = None
    if plain_background(rgb):  # studio shot: the border rule is exact there (the net never saw one)
        rule = estimate_alpha(rgb[..., :3])
        if rule.mean() >= MIN_COVER:
            return rule
    fg = net_cut(rgb)
    if fg.mean() < MIN_COVER:
        rule = estimate_alpha(rgb[..., :3]) if rule is None else rule  # computed at most once
        if rule.mean() > fg.mean():
            return rule
    return fg


# -- the object's mask: the image's alpha, else the automatic cut ----------------------------

BORDER_THRESH = 30.0  # colour distance (0-255 scale) from the background that counts as object


def estimate_alpha(rgb: np.ndarray) -> np.ndarray:
    """Mask (H,W) float32 in {0,1} for an RGB image on a plain background (median border colour)."""
    img = rgb.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    fg = np.linalg.norm(img - bg, axis=-1) > BORDER_THRESH
    fg = keep_large(fg, 0.05)  # drop specks: keep components at least 5% of the largest
    fg = ndimage.binary_fill_holes(fg)
    return fg.astype(np.float32)


def alpha_is_mask(image: np.ndarray) -> bool:
    """Does the image's alpha say where the object ends? RGBA with some pixel under 99% opaque;
    a fully opaque RGBA is a photo like an RGB one (the automatic cut, a real backdrop)."""
    return image.ndim == 3 and image.shape[2] == 4 and float(image[..., 3].min()) / 255.0 < 0.99


def object_mask(image: np.ndarray) -> tuple[np.ndarray, str]:
    """(alpha (H,W) float32 in [0,1], source): the alpha channel when it carries a mask
    (source "alpha"), else the automatic foreground of ``backend.segment`` (source "auto")."""
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 or HxWx4 image, got shape {image.shape}")
    if alpha_is_mask(image):
        return image[..., 3].astype(np.float32) / 255.0, "alpha"
    return segment(image[..., :3]), "auto"


def object_alpha(image: np.ndarray) -> np.ndarray:
    """Alpha (H,W) float32 in [0,1] of ``object_mask``."""
    return object_mask(image)[0]



# -- does the cut look right? -------------------------------------------------------------------

MAX_COVER = 0.85
MIN_COVER = 0.004
MAX_SIDES = 3
MAX_PIECES = 6


def cut_warnings(alpha: np.ndarray) -> list[dict[str, str]]:
    """Coded warnings (``MASK_SUSPECT``) with a sentence the artist can act on; [] when it looks fine.

    Wrong-looking: fills most of the frame, touches three or four sides of it, is tiny, or is in
    many pieces (a cluttered background cut into bits)."""
    fg = np.asarray(alpha) > 0.5
    h, w = fg.shape
    cover = float(fg.mean())
    why = []
    if cover > MAX_COVER:
        why.append(f"it fills {cover:.0%} of the frame")
    elif cover < MIN_COVER:
        why.append(f"it covers only {cover:.1%} of the frame")
    sides = sum(float(e.mean()) > 0.2 for e in (fg[0], fg[-1], fg[:, 0], fg[:, -1]))
    if sides >= MAX_SIDES and cover <= MAX_COVER:
        why.append(f"it runs into {sides} sides of the frame")
    if fg.any():
        lab, n = ndimage.label(fg)
        sizes = ndimage.sum(fg, lab, index=np.arange(1, n + 1))
        pieces = int((sizes >= max(0.0005 * h * w, 0.02 * sizes.max())).sum())
        if pieces > MAX_PIECES:
            why.append(f"it is in {pieces} separate pieces")
    if not why:
        return []
    return [{"code": "MASK_SUSPECT",
             "message": "the object could not be separated from the background: " + "; ".join(why)
             + "; give an image with alpha or a mask"}]
