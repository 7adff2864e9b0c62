"""The table of ops a backend serves, built explicitly at start-up.

Why a list here rather than registration on import: the op modules import only ``ops.py``, so no
module imports one that imports it back, and what a backend runs is read in one place.
"""

from __future__ import annotations

from .ops import OpSpec


def builtin_ops() -> dict[str, OpSpec]:
    """Every op of this package by name (imported now: the model ops pull in torch)."""
    from . import mesh_op, ops_builtin, reconstruct_op
    from .nerf import ops as nerf_ops

    fns = (ops_builtin.echo, reconstruct_op.reconstruct, mesh_op.mesh, nerf_ops.nerf_fit,
           nerf_ops.nerf_render, nerf_ops.nerf_points)
    specs: list[OpSpec] = [fn.op_spec for fn in fns]  # type: ignore[attr-defined]
    return {spec.name: spec for spec in specs}
