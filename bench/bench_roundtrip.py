"""Image -> backend on loopback -> points in Blender, split by stage, vs the model forward alone.

The forward pass is the model's own cloud (``lift=False``); the round trip includes lifting the
input view at the default density (~100k points for the 256 px chair)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backend_proc import start_backend
from .timing import measure, table

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool = False) -> dict:
    import bpy
    import torch

    from image2points.addon import points
    from image2points.addon.core import protocol
    from image2points.addon.core.client import Client, guess_media, points_from_result
    from image2points.backend.images import decode_image
    from image2points.backend.model.reconstruct import Reconstructor

    threads = torch.get_num_threads()
    data = (ROOT / "examples" / "chair.png").read_bytes()
    reps = 3 if quick else 7

    model = Reconstructor.load()
    img = decode_image(data)
    forward = measure(lambda: model.reconstruct([img], lift=False), reps, warmup=2)
    lifted = measure(lambda: model.reconstruct([img]), reps, warmup=1)

    proc, endpoint = start_backend(threads)
    stages: dict[str, list[float]] = {k: [] for k in
                                      ("encode", "server+wire", "model", "decode", "import", "total")}
    try:
        with Client(endpoint) as client:
            client.hello(timeout=30)
            for i in range(reps + 2):
                bpy.ops.wm.read_factory_settings(use_empty=True)
                t0 = time.perf_counter()
                protocol.encode({"type": "submit", "job": "x", "op": "reconstruct"},
                                {"image": data}, {"image": guess_media(data)})
                t1 = time.perf_counter()
                job = client.submit("reconstruct", {}, {"image": data}, {"image": guess_media(data)})
                res = client.wait(job, timeout=120)
                t2 = time.perf_counter()
                xyz, rgb = points_from_result(res)
                t3 = time.perf_counter()
                points.import_reconstruction("bench", xyz, rgb)
                t4 = time.perf_counter()
                if i < 2:
                    continue  # warm-up (model load, first allocations)
                model_s = float(res.meta.get("model_seconds", 0.0))
                for k, v in (("encode", t1 - t0), ("server+wire", t2 - t1 - model_s),
                             ("model", model_s), ("decode", t3 - t2), ("import", t4 - t3),
                             ("total", (t4 - t0) - (t1 - t0))):
                    stages[k].append(v)
    finally:
        proc.terminate()
        proc.wait(30)
    med = {k: float(np.median(v)) for k, v in stages.items()}
    ratio = med["total"] / forward.median
    rows = [(k, f"{v * 1e3:8.2f} ms") for k, v in med.items()]
    rows.append(("forward alone (in-process)", f"{forward.median * 1e3:8.2f} ms"))
    rows.append(("forward + lift (in-process)", f"{lifted.median * 1e3:8.2f} ms"))
    rows.append(("end-to-end / forward", f"{ratio:.2f}x (goal < 2x, total < 60 ms)"))
    print(table(f"roundtrip: image -> points in Blender, {threads} torch thread(s), "
                f"{len(xyz)} points", rows, ("stage", "median")))
    return {"stages_median_s": med, "forward": forward.as_dict(), "lifted": lifted.as_dict(), "ratio": ratio,
            "points": int(len(xyz)), "threads": threads}
