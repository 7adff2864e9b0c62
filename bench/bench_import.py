"""Importing coloured points into Blender: the project's importer vs mesh.from_pydata."""

from __future__ import annotations

import numpy as np

from .timing import measure, table


def run(quick: bool = False) -> dict:
    import bpy

    from image2points.addon import points

    counts = [10_000] if quick else [100_000, 1_000_000, 4_000_000]
    rng = np.random.default_rng(0)
    rows, out = [], {}
    reps = 3 if quick else 5
    for n in counts:
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        reset = lambda: bpy.ops.wm.read_factory_settings(use_empty=True)  # noqa: E731

        def ours() -> None:
            points.create_point_object("bench", xyz, rgb)

        def baseline() -> None:
            # what an add-on without foreach_set does with the points it got off the wire:
            # numpy -> Python list -> from_pydata (and it does not even set colours)
            mesh = bpy.data.meshes.new("bench")
            mesh.from_pydata(xyz.tolist(), [], [])
            obj = bpy.data.objects.new("bench", mesh)
            bpy.context.scene.collection.objects.link(obj)

        verts = xyz.tolist()

        def pydata_only() -> None:  # the list already made: from_pydata's own share
            mesh = bpy.data.meshes.new("bench")
            mesh.from_pydata(verts, [], [])

        s_ours = measure(ours, reps, setup=reset)
        s_base = measure(baseline, reps, setup=reset)
        s_list = measure(pydata_only, reps, setup=reset)
        ratio = s_base.median / s_ours.median
        rows.append((f"{n:,}", s_base.ms(), s_list.ms(), s_ours.ms(), f"{ratio:.1f}x",
                     f"{s_list.median / s_ours.median:.1f}x", f"{n / s_ours.median / 1e6:.1f} M pts/s"))
        out[str(n)] = {"from_pydata_from_numpy_no_colour": s_base.as_dict(),
                       "from_pydata_ready_list_no_colour": s_list.as_dict(),
                       "importer": s_ours.as_dict(), "speedup": ratio,
                       "speedup_vs_ready_list": s_list.median / s_ours.median}
    print(table("import: importer (positions + colours + GN + material) vs from_pydata from the same "
                "numpy array (positions only); goal >= 30x at 1M",
                rows, ("points", "from_pydata(xyz.tolist())", "from_pydata(ready list)", "importer",
                       "speedup", "vs ready list", "rate")))
    return out
