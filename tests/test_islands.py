"""islands.keep_large: the small-parts rule shared by the cut-out, the shape generator and the mesher."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from image2points.backend.islands import keep_large


def test_parts_below_the_share_or_the_least_go_and_the_largest_stays():
    m = np.zeros((40, 40), bool)
    m[2:22, 2:22] = True  # 400
    m[30:36, 30:36] = True  # 36: 9% of the largest
    m[2, 35] = True  # 1
    speckless = m.copy()
    speckless[2, 35] = False
    assert (keep_large(m, 0.05) == speckless).all()
    only_big = np.zeros_like(m)
    only_big[2:22, 2:22] = True
    assert (keep_large(m, 0.10) == only_big).all()
    assert (keep_large(m, 0.0, least=50) == only_big).all()
    assert keep_large(m, 0.0, least=10_000).sum() == 400  # a bar above the largest keeps the largest
    one = np.zeros((5, 5), bool)
    one[1, 1] = True
    assert keep_large(one, 0.5) is one  # one part: returned as given


def test_the_structure_decides_what_touches():
    m = np.zeros((6, 6), bool)
    m[0:3, 0:3] = True
    m[3, 3] = True  # touches the square at a corner only
    assert not keep_large(m, 0.5)[3, 3]  # faces only: a separate speck
    assert keep_large(m, 0.5, structure=ndimage.generate_binary_structure(2, 2))[3, 3]
