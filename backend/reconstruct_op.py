"""The ``reconstruct`` op: image bytes -> coloured points, batched over queued jobs."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import numpy as np

from image2points.addon.core.camera import VIEWER_FRAME as FRAME
from image2points.addon.core.limits import MAX_POINTS

from .images import decode_image
from .limits import Limits, decode_limits
from .ops import Job, JobError, Output, register_op

DEFAULT_MAX_POINTS = 1_000_000  # a cap; how many points come is `density`

_lock = threading.Lock()
_model: Any = None
_model_error: str | None = None
_device: str = "cpu"
_checkpoint: str | None = None


def configure(device: str = "cpu", checkpoint: str | None = None) -> None:
    global _device, _checkpoint
    _device, _checkpoint = device, checkpoint


def checkpoint_path() -> str | None:
    if _checkpoint:
        return _checkpoint
    try:
        from .model.reconstruct import default_checkpoint_path
    except ImportError:
        return None
    return str(default_checkpoint_path())


def get_model() -> Any:
    """Load the checkpoint once (thread-safe); a missing or bad one is a coded MODEL error."""
    global _model, _model_error
    with _lock:
        if _model is None:
            try:
                from .model.reconstruct import Reconstructor

                _model = Reconstructor.load(_checkpoint, device=_device)
                _model_error = None
            except (FileNotFoundError, ImportError) as exc:
                _model_error = f"no model checkpoint available ({exc}). Train one with " \
                               "'image2points train' or reinstall the package."
                raise JobError("MODEL", _model_error) from None
            except (ValueError, RuntimeError, KeyError) as exc:
                _model_error = f"the model checkpoint could not be loaded: {exc}"
                raise JobError("MODEL", _model_error) from None
        return _model


def unload() -> bool:
    global _model
    with _lock:
        had = _model is not None
        _model = None
    if had:
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
    return had


def status() -> dict[str, Any]:
    """What ``hello`` says about the model, without loading it."""
    if _model is not None:
        return {"state": "ready", **{k: v for k, v in _model.info.items() if _jsonable(v)}}
    path = checkpoint_path()
    import os

    if path is None or not os.path.exists(path):
        return {"state": "missing", "path": path, "error": _model_error or "no checkpoint"}
    return {"state": "error" if _model_error else "not loaded", "path": os.path.basename(path),
            **({"error": _model_error} if _model_error else {})}


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def _max_points(job: Job) -> int:
    n = job.params.get("max_points", DEFAULT_MAX_POINTS)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise JobError("BAD_INPUT", "max_points must be a positive integer")
    if n > MAX_POINTS:
        raise JobError("TOO_LARGE", f"max_points {n} exceeds the limit {MAX_POINTS}")
    return n


def _density(job: Job) -> int | None:
    """The ``density`` param: points wanted (10k-1M; None = the size-based default)."""
    from .model.lift import MAX_DENSITY, MIN_DENSITY

    n = job.params.get("density")
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < MIN_DENSITY:
        raise JobError("BAD_INPUT", f"density must be an integer from {MIN_DENSITY} to {MAX_DENSITY}")
    if n > MAX_DENSITY:
        raise JobError("TOO_LARGE", f"density {n} exceeds the limit {MAX_DENSITY}")
    return n


def _preprocess(img: np.ndarray, alpha: np.ndarray | None = None, size: int = 64) -> np.ndarray:
    """Per job, so an image with no object (blank, fully transparent, 1x1) fails alone as the
    sender's BAD_INPUT instead of failing every job batched with it as a MODEL error. ``size``:
    the model's input crop (``GeneratorConfig.in_res``)."""
    from .model.preprocess import preprocess

    try:
        return preprocess(img, size=size, alpha=alpha)
    except ValueError as exc:
        raise JobError("BAD_INPUT", f"{exc}; send an image with one object on a plain or "
                       "transparent background, or a mask") from None


def cut_out(img: np.ndarray, mask: bytes | memoryview | None = None, strict: bool = False,
            limits: Limits | None = None) -> tuple[np.ndarray, str, list[dict[str, str]]]:
    """(alpha, source, warnings) for one decoded image: the user's mask (source "mask"), else its
    alpha ("alpha"), else the automatic cut ("auto"), which is checked; ``strict`` turns a warning
    into BAD_INPUT. Shared by the server op and the in-process CLI (``limits`` None)."""
    from .images import decode_mask
    from .segment import cut_warnings, object_mask

    if mask is not None:
        alpha = decode_mask(mask, img.shape[:2], *decode_limits(limits))
        return alpha, "mask", []
    try:
        alpha, source = object_mask(img)
    except ValueError as exc:
        raise JobError("BAD_INPUT", str(exc)) from None
    # an empty cut is no doubt but a refusal, which preprocess words ("no object found")
    warns = cut_warnings(alpha) if source == "auto" and (alpha > 0.5).any() else []
    if warns and strict:
        raise JobError("BAD_INPUT", warns[0]["message"] + " (strict mode refuses a doubtful cut)")
    return alpha, source, warns


def _strict(job: Job) -> bool:
    v = job.params.get("strict", False)
    if not isinstance(v, bool):
        raise JobError("BAD_INPUT", "strict must be true or false")
    return v


@register_op("reconstruct", batch=True, requires=("image",))
def reconstruct(jobs: list[Job], limits: Limits | None = None) -> list[Output | JobError]:
    outs: list[Output | JobError | None] = [None] * len(jobs)
    images, idx = [], []
    sources: list[Any] = []
    densities: list[int | None] = []
    cuts: dict[int, tuple[np.ndarray, str, list[dict[str, str]]]] = {}  # mask used, source, warnings
    for i, job in enumerate(jobs):
        try:
            data = job.blobs.get("image")
            if not isinstance(data, (bytes, memoryview)):
                raise JobError("BAD_INPUT", "reconstruct needs an encoded image blob named 'image'")
            job.progress(0.05, "decoding image")
            img = decode_image(data, *decode_limits(limits), name="image")
            _max_points(job)
            dens = _density(job)
            mask = job.blobs.get("mask")
            if mask is not None and not isinstance(mask, (bytes, memoryview)):
                raise JobError("BAD_INPUT", "'mask' must be an encoded image blob (PNG)")
            alpha, source, warns = cut_out(img, mask, _strict(job), limits)
            if _model is None:
                job.progress(0.1, "loading model")
            x = _preprocess(img, alpha, get_model().model.cfg.in_res)
            cuts[i] = (np.round(alpha * 255).astype(np.uint8), source, warns)
            job.check_cancel()
            images.append(x)
            idx.append(i)
            sources.append((img, alpha))
            if "max_points" in job.params:  # a cap: no point lifting more than is sent
                from .model.lift import default_density

                dens = min(dens or default_density(*img.shape[:2]), _max_points(job))
            densities.append(dens)
        except JobError as exc:
            outs[i] = exc
    if images:
        t0 = time.perf_counter()
        model = get_model()  # loaded while the first job was prepared (its "loading model")
        for i in idx:
            jobs[i].progress(0.3, "running model")
        clouds = model.reconstruct_inputs(np.stack(images), sources=sources, density=densities)
        dt = time.perf_counter() - t0
        for i, cloud in zip(idx, clouds):
            job = jobs[i]
            try:
                job.check_cancel()
                xyz, rgb = _subsample(cloud.xyz, cloud.rgb, _max_points(job), job.id)
                digest = hashlib.sha256(bytes(job.blobs["image"])).hexdigest()[:16]
                meta = {"frame": FRAME, "units": "unit ball (max surface distance 1)",
                        "count": int(len(xyz)), "model": model.info.get("name", "?"),
                        "model_sha256": str(model.info.get("sha256", ""))[:16],
                        "image_sha256": digest, "batch": len(idx), "model_seconds": round(dt, 4),
                        "visible_points": int(cloud.meta.get("visible", 0)),
                        "mask_source": cuts[i][1], "warnings": cuts[i][2]}
                outs[i] = Output(meta, {"xyz": xyz, "rgb": rgb, "mask": cuts[i][0]})
            except JobError as exc:
                outs[i] = exc
    return [o for o in outs if o is not None]


def _subsample(xyz: np.ndarray, rgb: np.ndarray, n: int, seed: str) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if len(xyz) <= n:
        return xyz, rgb
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    keep = np.sort(rng.choice(len(xyz), n, replace=False))
    return xyz[keep], rgb[keep]
