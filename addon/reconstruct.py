"""Reconstruct: the chosen picture to the backend, the predicted coloured point cloud into the scene.

No Python threads: the interactive path polls the job's socket from a window-manager timer,
``execute()`` (scripts, background mode) blocks with a deadline (job_task.BackendTask). Both end
in one import inside an operator that returns FINISHED with the UNDO flag: one undo step.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from typing import Any

import bpy
import numpy as np

from . import image_input, points, props, visibility
from .connection import EndpointProps
from .core import placement
from .core.camera import VIEWER_FRAME
from .core.client import BackendError, JobResult, guess_media, points_from_result
from .job_task import BackendTask, CancelOperator, active
from .modal_task import ModalTaskOperator
from .selection import select_only


def editor_image(context: Any) -> Any:
    """The image in an Image Editor: the one under the mouse first, then any open window."""
    space: Any = getattr(context, "space_data", None)
    if getattr(space, "type", "") == "IMAGE_EDITOR" and space.image is not None:
        return space.image
    wm = getattr(context, "window_manager", None)
    for window in getattr(wm, "windows", None) or []:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR" and area.spaces.active.image is not None:
                return area.spaces.active.image
    return None


def read_source(context: Any) -> tuple[str, bytes]:
    """(display name, image bytes) from the scene's chosen source; BAD_INPUT when there is none."""
    s = props.scene_settings(context)
    if s is None:
        raise BackendError("BAD_INPUT", "Image2Points is not registered in this scene")
    if s.source == "FILE":
        path = bpy.path.abspath(s.filepath) if s.filepath else ""
        if not path or not os.path.isfile(path):
            raise BackendError("BAD_INPUT", f"image file not found: '{s.filepath}'. Pick a file "
                               "in the Image2Points panel")
        return os.path.basename(path), image_input.file_png(path)
    img = s.image if s.source == "IMAGE" else editor_image(context)
    if img is None:
        where = "an Image in the panel" if s.source == "IMAGE" else "an image in an Image Editor"
        raise BackendError("BAD_INPUT", f"no input image: open {where}, or switch the source")
    return str(img.name), image_input.image_png(img)


def read_mask(context: Any) -> bytes | None:
    """The panel's optional mask image as bytes for the backend's 'mask' blob (None if unset)."""
    s = props.scene_settings(context)
    img = getattr(s, "mask_image", None) if s is not None else None
    return image_input.image_png(img) if img is not None else None


def source_pixels(context: Any) -> np.ndarray | None:
    """The input's pixels for the cut-out preview (None when they cannot be had cheaply)."""
    s = props.scene_settings(context)
    try:
        if s is None or s.source == "FILE":
            return None
        img = s.image if s.source == "IMAGE" else editor_image(context)
        return image_input.image_pixels_u8(img) if img is not None else None
    except (BackendError, RuntimeError, AttributeError, ValueError):
        return None


class ReconstructTask(BackendTask):
    """One reconstruction: the picture (and mask) in, a point object out."""

    op = "reconstruct"
    slot = "job"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.name = ""
        self.sha256 = ""
        self.result_object: Any = None

    def request(self, context: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        self.name, data = read_source(context)
        self.sha256 = hashlib.sha256(data).hexdigest()
        mask = read_mask(context)
        s = props.scene_settings(context)
        params: dict[str, Any] = {"density": int(s.density)} if s is not None else {}
        blobs: dict[str, Any] = {"image": data}
        media = {"image": guess_media(data)}
        if mask is not None:
            blobs["mask"], media["mask"] = mask, guess_media(mask)
        if self.cfg.strict_cut:
            params["strict"] = True
        return params, blobs, media

    def submitted(self) -> str:
        return f"Reconstructing {self.name}"

    def on_result(self, context: Any, res: JobResult) -> str:
        xyz, rgb = points_from_result(res)
        frame = str(res.meta.get("frame", ""))
        if frame and frame != VIEWER_FRAME:
            raise BackendError("VERSION", f"result frame '{frame}' is not {VIEWER_FRAME}; "
                               "update the add-on or the backend", self.job)
        obj = self.result_object = import_result(context, self, xyz, rgb, res)
        self.warnings = [w["message"] for w in res.warnings]
        mask = res.mask
        if mask is not None:
            from .cutout import show_cutout

            try:
                props.set_state(context, cutout=show_cutout(mask, source_pixels(context)).name)
            except (RuntimeError, ValueError, AttributeError):  # a preview is not worth a failure
                props.set_state(context, cutout="")
        n = int(obj["i2p_point_count"])
        props.set_state(context, last_object=obj.name)
        self.summary = f"imported {n} points as '{obj.name}'"
        return f"Imported {n} points as '{obj.name}' ({time.monotonic() - self.t0:.1f} s)"


def import_result(context: Any, task: ReconstructTask, xyz: np.ndarray, rgb: np.ndarray,
                  res: JobResult) -> Any:
    """Points -> an upright object with provenance, placed clear of the scene (the 3D cursor when
    free, else beside everything along +X: placement.py), selected, active and framed."""
    scene = context.scene
    s = props.scene_settings(context)
    size = float(s.size) if s is not None else 2.0
    radius = float(s.radius) if s is not None else 0.012
    use_colour = bool(s.use_colour) if s is not None else True
    collection = getattr(context, "collection", None) or scene.collection
    model = task.info.get("model") or {}
    provenance = {
        "source_image": task.name,
        "source_sha256": task.sha256,
        "backend_version": str(task.info.get("version", "")),
        "backend_device": str(task.info.get("device", "")),
        "model": str(res.meta.get("model", "") or (model.get("name", "") if isinstance(model, dict) else "")),
        "model_sha256": str(res.meta.get("model_sha256", "")),
        "job": res.job,
        "mask_source": str(res.meta.get("mask_source", "")),
        "warnings": "; ".join(f"{w.get('code')}: {w['message']}" for w in res.warnings),
        "imported_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    stem = os.path.splitext(task.name)[0] or "Image2Points"
    location = placement.clear_location(tuple(scene.cursor.location), size,
                                        visibility.visible_boxes(context))
    obj = points.import_reconstruction(stem, xyz, rgb if use_colour else None, size=size, radius=radius,
                                       location=location, collection=collection,
                                       provenance=provenance)
    if s is not None:
        points.set_colour_mode(s.colour_mode)
    select_only(context, obj)
    visibility.frame_in_viewports(context)
    return obj


class IMAGE2POINTS_OT_reconstruct(ModalTaskOperator, EndpointProps, bpy.types.Operator):
    """Send the chosen image to the backend and import the predicted coloured point cloud"""

    bl_idname = "image2points.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}

    _task: ReconstructTask | None = None

    @classmethod
    def poll(cls, context: Any) -> bool:
        return active("job") is None and props.scene_settings(context) is not None

    def make_task(self, context: Any) -> ReconstructTask:
        return ReconstructTask(self.settings(context))


class IMAGE2POINTS_OT_cancel(CancelOperator, bpy.types.Operator):
    """Cancel the running reconstruction (nothing is imported)"""

    bl_idname = "image2points.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}
    slot = "job"


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_reconstruct, IMAGE2POINTS_OT_cancel)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    from .job_task import release_all

    release_all()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
