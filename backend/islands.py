"""A mask's large connected parts: the one rule behind dropping specks from a cut-out, crumbs
from a generated shape and crumbs from the mesher's solid (pure numpy + scipy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_large(mask: np.ndarray, share: float, least: float = 0.0,
               structure: np.ndarray | None = None) -> np.ndarray:
    """``mask`` (bool, any dimension) without its connected parts (``structure``: scipy's default,
    faces only) smaller than ``share`` of the largest and than ``least`` elements; the largest
    always stays. Returned as given when it has one part or none."""
    lab, n = ndimage.label(mask, structure)
    if n <= 1:
        return mask
    size = np.bincount(lab.ravel())[1:]
    bar = min(max(least, share * size.max()), size.max())
    return np.isin(lab, np.flatnonzero(size >= bar) + 1)
