"""Positional (Fourier-feature) encoding, as in the seed: [x, sin(2^k x), cos(2^k x)].

Why: an MLP on raw coordinates is biased to low frequencies; the encoding lets it fit detail.
The seed uses 2^k without pi; we keep that so ``n_freqs=16`` reproduces its 99 inputs.
"""

from __future__ import annotations

import torch


def encoded_dim(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    return in_dim * (2 * n_freqs + (1 if include_input else 0))


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """(..., D) -> (..., D * (2 n_freqs + 1)); ordering [x, sin f0, cos f0, sin f1, ...] like the seed."""
    parts = [x] if include_input else []
    for k in range(n_freqs):
        s = x * (2.0 ** k)
        parts.append(torch.sin(s))
        parts.append(torch.cos(s))
    return torch.cat(parts, dim=-1)
