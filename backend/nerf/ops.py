"""Server ops for NeRF: ``nerf_fit``, ``nerf_render``, ``nerf_points``.

The client sends images as PNG blobs and cameras as JSON; the server never opens a client path.
Fitted models live in a small in-memory LRU keyed by a model id; ``nerf_fit`` also returns the
saved weights as a ``model`` blob (uint8 bytes of the safe torch format) so the client can keep
them, and ``nerf_render``/``nerf_points`` accept that blob back when the id was evicted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np

from image2points.addon.core import nerf_capture as nc
from image2points.addon.core import transforms as tj
from image2points.addon.core.limits import MAX_POINTS

from ..ops import Job, JobError, Output, register_op
from .dataset import NerfDataError, dataset_from_doc, decode_image

MAX_MODELS = 3
MAX_IMAGES = 400
MAX_MINUTES = 60.0
MAX_STEPS = 200_000
MAX_RENDER_PIXELS = 2048 * 2048
FIELDS = ("fast", "fast-sh", "mlp", "mlp-seed")

_lock = threading.Lock()
_models: OrderedDict[str, Any] = OrderedDict()


def _store(model: Any) -> str:
    mid = uuid.uuid4().hex[:12]
    with _lock:
        _models[mid] = model
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
    return mid


def _get_model(job: Job) -> Any:
    from .training import model_from_bytes

    mid = job.params.get("model_id")
    if isinstance(mid, str):
        with _lock:
            if mid in _models:
                _models.move_to_end(mid)
                return _models[mid]
    blob = job.blobs.get("model")
    if blob is not None:
        data = blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)
        try:
            model = model_from_bytes(data, job.device)
        except ValueError as e:
            raise JobError("BAD_INPUT", f"the 'model' blob is not a NeRF model: {e}") from None
        job.params["model_id"] = _store(model)
        return model
    raise JobError("MODEL", f"unknown NeRF model id {mid!r} (the server keeps the last {MAX_MODELS}); "
                   "send the saved model as a 'model' blob or fit again")


def _cameras(params: dict, key: str = "transform_matrices") -> list[np.ndarray]:
    mats = params.get(key)
    if not isinstance(mats, list) or not mats:
        raise JobError("BAD_INPUT", f"'{key}' must be a non-empty list of 4x4 camera-to-world matrices")
    try:
        return [nc.check_pose(m, f"{key}[{i}]") for i, m in enumerate(mats)]
    except nc.DatasetError as e:
        raise JobError("BAD_INPUT", str(e)) from None


def _intrinsics_doc(params: dict) -> dict:
    intr = params.get("intrinsics", params)
    if not isinstance(intr, dict):
        raise JobError("BAD_INPUT", "'intrinsics' must be an object with camera_angle_x or fl_x/fl_y/cx/cy")
    # distortion keys go through too, so that the loader refuses them as it does from a file
    keys = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h",
            "k1", "k2", "k3", "p1", "p2", "camera_model")
    return {k: intr[k] for k in keys if k in intr}


@register_op("nerf_fit")
def nerf_fit(job: Job) -> Output:
    """params: field, minutes|steps, camera_angle_x or intrinsics{...}, transform_matrices, aabb?;
    blobs image_0..image_K (PNG). Streams progress with a preview every few seconds."""
    import torch

    from .training import FitConfig, FitTooLarge, check_fit_size, fit, model_to_bytes

    p = job.params
    field = p.get("field", "fast")
    if field not in FIELDS:
        raise JobError("BAD_INPUT", f"field must be one of {', '.join(FIELDS)}, got {field!r}")
    minutes, steps = p.get("minutes"), p.get("steps")
    if minutes is None and steps is None:
        minutes = 2.0
    try:
        minutes = None if minutes is None else float(minutes)
        steps = None if steps is None else int(steps)
    except (TypeError, ValueError):
        raise JobError("BAD_INPUT", "'minutes' must be a number and 'steps' an integer") from None
    if (minutes is not None and not 0 < minutes <= MAX_MINUTES) or (steps is not None and not 0 < steps <= MAX_STEPS):
        raise JobError("TOO_LARGE", f"budget must be 0 < minutes <= {MAX_MINUTES} and 0 < steps <= {MAX_STEPS}")
    seed = p.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise JobError("BAD_INPUT", f"'seed' must be an integer, got {seed!r}")
    mats = p.get("transform_matrices")
    if not isinstance(mats, list) or not mats:
        raise JobError("BAD_INPUT", "'transform_matrices' must be a non-empty list of 4x4 matrices")
    if len(mats) > MAX_IMAGES:
        raise JobError("TOO_LARGE", f"at most {MAX_IMAGES} images per fit, got {len(mats)}")
    doc: dict[str, Any] = _intrinsics_doc(p)
    if "aabb" in p:
        doc["aabb"] = p["aabb"]
    doc["frames"] = [{"file_path": f"image_{i}", "transform_matrix": m} for i, m in enumerate(mats)]

    def check_size(w: Any, h: Any) -> None:
        try:
            check_fit_size(len(mats), w, h)
        except FitTooLarge as e:
            raise JobError("TOO_LARGE", str(e)) from None

    if isinstance(doc.get("w"), int) and isinstance(doc.get("h"), int):
        check_size(doc["w"], doc["h"])  # before decoding any image

    def load(i: int) -> np.ndarray:
        blob = job.blobs.get(f"image_{i}")
        if blob is None:
            raise NerfDataError(f"image_{i} is missing: send one image blob per transform matrix")
        img = decode_image(blob if isinstance(blob, np.ndarray) and blob.ndim == 3 else
                           (blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)), f"image_{i}")
        if i == 0:  # all images have this size (dataset_from_doc checks): refuse before decoding the rest
            check_size(img.shape[1], img.shape[0])
        return img

    job.progress(0.0, "load")
    try:
        data = dataset_from_doc(doc, load, "nerf_fit")
    except NerfDataError as e:
        raise JobError("BAD_INPUT", str(e)) from None

    last_preview = [0.0]

    def progress(frac: float, stage: str, metrics: dict, preview: np.ndarray | None) -> None:
        blobs = None
        if preview is not None and time.monotonic() - last_preview[0] > 2.0:
            last_preview[0] = time.monotonic()
            blobs = {"preview": preview}
        job.progress(0.02 + 0.95 * frac, stage, metrics, blobs)

    try:
        model = fit(data, FitConfig(field=field, minutes=minutes, steps=steps, seed=seed),
                    device=job.device, progress=progress, should_stop=job.cancelled)
    except FitTooLarge as e:
        raise JobError("TOO_LARGE", str(e)) from None
    except NerfDataError as e:  # no usable scene box: cannot be estimated, or no ray meets it
        raise JobError("BAD_INPUT", str(e)) from None
    except torch.cuda.OutOfMemoryError:
        raise JobError("OOM", "out of GPU memory while fitting; use fewer/smaller images or the CPU") from None
    except MemoryError:
        raise JobError("OOM", "out of memory while fitting; use fewer/smaller images") from None
    if model.meta["stopped"] == "cancelled":
        raise JobError("CANCELLED", "NeRF fit cancelled by the client")
    mid = _store(model)
    out_blobs: dict[str, np.ndarray] = {}
    if p.get("return_model", True):
        out_blobs["model"] = np.frombuffer(model_to_bytes(model, half=True), dtype=np.uint8)
    meta = {"model_id": mid, "frame": "world (as the cameras), Z up, scene units",
            **{k: model.meta[k] for k in ("field", "steps", "seconds", "train_psnr", "stopped")}}
    return Output(meta=meta, blobs=out_blobs)


@register_op("nerf_render")
def nerf_render(job: Job) -> Output:
    """params: model_id, transform_matrices (c2w list), intrinsics (camera_angle_x/fl_x.., w, h);
    returns image_0..image_K as uint8 HxWx3 (white background)."""
    from .rendering import Cancelled, render_image, to_uint8

    model = _get_model(job)
    cams = _cameras(job.params)
    doc = _intrinsics_doc(job.params)
    try:
        intr = tj.intrinsics_from_doc(doc, None, "nerf_render")
    except nc.DatasetError as e:
        raise JobError("BAD_INPUT", str(e)) from None
    if intr.w * intr.h * len(cams) > MAX_RENDER_PIXELS * 4:
        raise JobError("TOO_LARGE", "too many pixels requested; render fewer or smaller views")
    blobs = {}
    for i, m in enumerate(cams):
        try:
            rgb = render_image(model.field, m, intr, should_stop=job.cancelled)["rgb"]
        except Cancelled:
            raise JobError("CANCELLED", "render cancelled by the client") from None
        blobs[f"image_{i}"] = to_uint8(rgb)
        job.progress((i + 1) / len(cams), "render")
    return Output(meta={"model_id": job.params.get("model_id"), "count": len(cams), "background": "white"}, blobs=blobs)


@register_op("nerf_points")
def nerf_points(job: Job) -> Output:
    """params: model_id, max_points; returns xyz float32 (N,3) world frame and rgb uint8 (N,3).
    Casts at most ``points.MAX_POINT_RAYS`` rays (see that module); stops on cancel."""
    from .points import extract_points
    from .rendering import Cancelled

    model = _get_model(job)
    try:
        max_points = int(job.params.get("max_points", 200_000))
    except (TypeError, ValueError):
        raise JobError("BAD_INPUT", "'max_points' must be an integer") from None
    if not 0 < max_points <= MAX_POINTS:
        raise JobError("TOO_LARGE", f"max_points must be in 1..{MAX_POINTS}")
    job.progress(0.1, "points")
    try:
        xyz, rgb = extract_points(model, max_points=max_points, should_stop=job.cancelled)
    except Cancelled:
        raise JobError("CANCELLED", "point extraction cancelled by the client") from None
    return Output(meta={"model_id": job.params.get("model_id"), "count": int(len(xyz)),
                        "frame": "world (as the cameras), Z up, scene units"},
                  blobs={"xyz": xyz, "rgb": rgb})
