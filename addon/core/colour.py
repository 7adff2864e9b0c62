"""sRGB <-> linear, the one conversion both sides use.

Why a table for bytes: colour attributes hold scene-linear floats, and a 256-entry lookup is about
ten times faster than pow() per value on a million points.
"""

from __future__ import annotations

import numpy as np


def srgb_to_linear_float(c: np.ndarray) -> np.ndarray:
    """sRGB values in 0..1 -> linear (IEC 61966-2-1)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values (clipped to 0..1) -> sRGB in 0..1."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


_SRGB_TO_LINEAR = srgb_to_linear_float(np.arange(256) / 255.0).astype(np.float32)


def srgb_to_linear(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear (Blender's FLOAT_COLOR attributes are scene-linear)."""
    return _SRGB_TO_LINEAR[np.asarray(rgb_u8, dtype=np.uint8)]


def linear_to_srgb_u8(c: np.ndarray) -> np.ndarray:
    """Linear floats -> uint8 sRGB, rounded."""
    return np.round(linear_to_srgb(c) * 255.0).astype(np.uint8)
