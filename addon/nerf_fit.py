"""Fit NeRF: send a captured dataset to the backend and fit a NeRF there (progress, a preview and
the saved model file come back). The fit's job state is the "nerf_job" slot; the backend never
opens a path: images travel as PNG bytes, the parameters come from core/nerf_requests.fit_request.
"""

from __future__ import annotations

import os
import time
from typing import Any

import bpy
import numpy as np
from bpy.props import FloatProperty, IntProperty, StringProperty

from . import preferences, props
from .connection import EndpointProps
from .core import nerf_capture as nc
from .core import nerf_requests as nreq
from .core import transforms as tj
from .core.client import BackendError, JobResult
from .job_task import BackendTask, CancelOperator, active
from .modal_task import ModalTaskOperator
from .paths import safe_name

PREVIEW_IMAGE = "Image2Points NeRF Preview"


def model_dir(context: Any) -> str:
    """Where fitted models are saved: the panel's folder, else the extension's user folder."""
    s = props.scene_settings(context)
    if s is not None and s.nerf_model_dir:
        path = bpy.path.abspath(s.nerf_model_dir)
        os.makedirs(path, exist_ok=True)
        return path
    try:
        return str(bpy.utils.extension_path_user(preferences.base_package, path="nerf", create=True))
    except (ValueError, RuntimeError):  # not installed as an extension (tests, legacy add-on)
        path = os.path.join(bpy.utils.user_resource("DATAFILES", path="image2points"), "nerf")
        os.makedirs(path, exist_ok=True)
        return path


def store_image(name: str, rgba: np.ndarray) -> Any:
    """(H, W, 4) float sRGB, top row first -> an Image datablock (bottom-up, via foreach_set)."""
    h, w = rgba.shape[:2]
    img = bpy.data.images.get(name)
    if img is not None and (tuple(img.size) != (w, h) or img.source != "GENERATED"):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=True)
    pixels: Any = img.pixels
    pixels.foreach_set(nc.blender_pixels(rgba))
    img.update()
    img["i2p_source"] = "nerf"
    return img


def show_preview(blob: Any) -> None:
    """A progress preview (PNG bytes or an image array) into the preview Image datablock."""
    store_image(PREVIEW_IMAGE, nc.as_rgba_float(blob))


class FitTask(BackendTask):
    """One nerf_fit job; its deadline is the job timeout or the training budget plus two minutes."""

    op = "nerf_fit"
    slot = "nerf_job"
    what = "fit"
    busy = "a NeRF job is already running; cancel it first"

    def __init__(self, cfg: preferences.Settings, dataset: str, field: str, minutes: float, steps: int):
        super().__init__(cfg)
        self.dataset, self.field, self.minutes, self.steps = dataset, field, minutes, steps
        self.n_frames = 0
        self.model_id = ""
        budget = 60.0 * minutes + 120.0 if minutes > 0 else 0.0
        self.timeout = max(cfg.job_timeout, budget)

    def request(self, context: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        try:
            ds = tj.read_transforms(bpy.path.abspath(self.dataset) if self.dataset else "", "train")
            params, blobs, media = nreq.fit_request(ds, self.field, self.minutes, self.steps)
        except (nc.DatasetError, OSError) as exc:
            raise BackendError("BAD_INPUT", str(exc)) from None
        self.n_frames = len(ds.frames)
        return params, blobs, media

    def submitted(self) -> str:
        return f"Fitting a {self.field} NeRF to {self.n_frames} views"

    def on_progress(self, context: Any, value: float, stage: str, msg: Any) -> None:
        header = getattr(msg, "header", {}) or {}
        p = header.get("progress", {}) if isinstance(header, dict) else {}
        extra = [f"{k} {p[k]:.1f}" if isinstance(p[k], float) else f"{k} {p[k]}"
                 for k in ("step", "train_psnr") if k in p]
        if msg is not None and getattr(msg, "blobs", None):
            try:
                show_preview(next(iter(msg.blobs.values())))
            except (nc.DatasetError, ValueError, RuntimeError):
                pass  # a preview is a nicety; never fail the fit over one
        super().on_progress(context, value, " ".join([stage, *extra]).strip(), msg)

    def on_result(self, context: Any, res: JobResult) -> str:
        mid = nreq.model_id_of(res.meta)
        if not mid:
            raise BackendError("VERSION", "nerf_fit answered without a model id; update the "
                               "backend", self.job)
        self.model_id = mid
        saved = ""
        blob = res.blobs.get("model")
        if blob is not None:
            path = os.path.join(model_dir(context), f"{safe_name(mid)}.nerf.pt")
            data = blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
            saved = path
        props.set_state(context, nerf_model_id=mid, nerf_model_file=saved)
        self.summary = f"fitted NeRF {mid}"
        metric = res.meta.get("train_psnr")
        extra = f", train PSNR {float(metric):.1f} dB" if isinstance(metric, (int, float)) else ""
        return f"Fitted NeRF {mid[:12]} in {time.monotonic() - self.t0:.0f} s{extra}"


class IMAGE2POINTS_OT_fit_nerf(ModalTaskOperator, EndpointProps, bpy.types.Operator):
    """Send the captured dataset to the backend and fit a NeRF (progress in the panel)"""

    bl_idname = "image2points.fit_nerf"
    bl_label = "Fit NeRF"
    bl_options = {"REGISTER"}  # changes no Blender data: nothing to undo

    dataset: StringProperty(name="Dataset", default="", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    minutes: FloatProperty(name="Minutes", default=0.0, min=0.0,  # type: ignore[valid-type]
                           options={"HIDDEN", "SKIP_SAVE"})
    steps: IntProperty(name="Steps", default=0, min=0, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    _task: FitTask | None = None
    timer_interval = 0.2

    @classmethod
    def poll(cls, context: Any) -> bool:
        return active("nerf_job") is None and props.scene_settings(context) is not None

    def make_task(self, context: Any) -> FitTask:
        s = props.scene_settings(context)
        minutes = float(self.minutes) or (0.0 if self.steps else float(s.nerf_minutes))
        return FitTask(self.settings(context), self.dataset or str(s.nerf_dataset), str(s.nerf_field),
                       minutes, int(self.steps))


class IMAGE2POINTS_OT_cancel_nerf(CancelOperator, bpy.types.Operator):
    """Cancel the running NeRF fit or capture"""

    bl_idname = "image2points.cancel_nerf"
    bl_label = "Cancel NeRF Job"
    bl_options = {"REGISTER"}
    slot = "nerf_job"


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_fit_nerf, IMAGE2POINTS_OT_cancel_nerf)
