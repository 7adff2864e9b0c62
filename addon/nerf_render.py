"""Using a fitted NeRF: render it at Blender cameras into Images, or import its surface points.

Both are short requests that block with a deadline on the shared client; when the backend no
longer holds the model (it keeps a few) the fit's saved model file is sent along once.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import bpy
from bpy.props import StringProperty

from . import points, preferences, props
from .connection import EndpointProps, error_text, get_client
from .core import nerf_capture as nc
from .core import nerf_requests as nreq
from .core.client import BackendError, JobResult, points_from_result
from .job_task import active, fail_job
from .nerf_fit import store_image
from .selection import select_only

POINTS_FRAME = "blender-world"


def model_id(context: Any, override: str = "") -> str:
    state = props.job_state(context)
    mid = override or (str(state.nerf_model_id) if state is not None else "")
    if not mid:
        raise BackendError("BAD_INPUT", "no fitted NeRF yet: run Fit NeRF first")
    return mid


def request(context: Any, cfg: preferences.Settings, op: str, params: dict[str, Any],
            timeout: float) -> JobResult:
    """Submit and wait (blocking, with a deadline). When the backend no longer holds the model
    (it keeps a few, LRU) and the fit's model file was saved, send that file along once."""
    client = get_client(cfg)
    client.poll_events(0)
    try:
        return client.wait(client.submit(op, params), timeout=timeout,
                           stall_timeout=cfg.stall_timeout)
    except BackendError as exc:
        state = props.job_state(context)
        path = str(state.nerf_model_file) if state is not None else ""
        if exc.code != "MODEL" or "unknown NeRF model" not in exc.message or not os.path.isfile(path):
            raise
    with open(path, "rb") as f:
        blob = f.read()
    res = client.wait(client.submit(op, params, {"model": blob}), timeout=timeout,
                      stall_timeout=cfg.stall_timeout)
    mid = str(res.meta.get("model_id") or "")
    if mid and state is not None:  # the backend holds it again, under a new id
        state.nerf_model_id = mid
    return res


def render_cameras(context: Any) -> list[Any]:
    cams = [o for o in (getattr(context, "selected_objects", None) or []) if o.type == "CAMERA"]
    if not cams and context.scene.camera is not None:
        cams = [context.scene.camera]
    return cams


def render_nerf(context: Any, cfg: preferences.Settings, mid: str, cams: list[Any]) -> list[Any]:
    if not cams:
        raise BackendError("BAD_INPUT", "no camera: select cameras or set the scene camera")
    r = context.scene.render
    context.view_layer.update()
    images = []
    for cam in cams:
        if cam.type != "CAMERA":
            raise BackendError("BAD_INPUT", f"'{cam.name}' is not a camera")
        try:
            intr = nc.intrinsics_from_camera(cam.data, r, allow_shift=True)
            pose = nc.clean_pose(cam.matrix_world)
        except nc.DatasetError as exc:
            raise BackendError("BAD_INPUT", f"camera '{cam.name}': {exc}") from None
        res = request(context, cfg, "nerf_render", nreq.render_request(mid, [pose], intr),
                      cfg.job_timeout)
        blobs = nreq.result_images(res.blobs)
        if not blobs:
            raise BackendError("VERSION", "nerf_render answered without an image", res.job)
        rgba = nc.as_rgba_float(blobs[0])
        if rgba.shape[:2] != (intr.h, intr.w):
            raise BackendError("MODEL", f"nerf_render gave {rgba.shape[1]}x{rgba.shape[0]}, "
                               f"asked for {intr.w}x{intr.h}", res.job)
        img = store_image(f"NeRF render {cam.name.removeprefix('NeRF ')}", rgba)
        img["i2p_model_id"] = mid
        img["i2p_job"] = res.job
        images.append(img)
    return images


class _ModelRequest(EndpointProps):
    """A short request about the fitted NeRF: ``run()`` does it and returns the status line."""

    model: StringProperty(name="Model", default="", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        state = props.job_state(context)
        return state is not None and bool(state.nerf_model_id) and active("nerf_job") is None

    def run(self, context: Any, cfg: preferences.Settings, mid: str) -> str:
        raise NotImplementedError

    def execute(self, context: Any) -> set[Any]:
        cfg = self.settings(context)
        try:
            line = self.run(context, cfg, model_id(context, self.model))
        except BackendError as exc:
            fail_job(context, "nerf_job", exc, cfg.endpoint)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")  # type: ignore[attr-defined]
            return {"CANCELLED"}
        props.set_job(context, "nerf_job", status=line, error_code="", error_message="")
        self.report({"INFO"}, f"Image2Points: {line}")  # type: ignore[attr-defined]
        return {"FINISHED"}


class IMAGE2POINTS_OT_render_nerf(_ModelRequest, bpy.types.Operator):
    """Render the fitted NeRF at the selected cameras (or the scene camera) into Images"""

    bl_idname = "image2points.render_nerf"
    bl_label = "Render from NeRF"
    bl_options = {"REGISTER", "UNDO"}

    def run(self, context: Any, cfg: preferences.Settings, mid: str) -> str:
        images = render_nerf(context, cfg, mid, render_cameras(context))
        return f"Rendered {', '.join(i.name for i in images)}"


def import_nerf_points(context: Any, cfg: preferences.Settings, mid: str, max_points: int) -> Any:
    res = request(context, cfg, "nerf_points", nreq.points_request(mid, max_points), cfg.job_timeout)
    xyz, rgb = points_from_result(res)
    frame = str(res.meta.get("frame", POINTS_FRAME))
    if not nreq.is_world_frame(frame):
        raise BackendError("VERSION", f"nerf_points answered in frame '{frame}', not the cameras' "
                           "world; update the add-on or the backend", res.job)
    s = props.scene_settings(context)
    radius = float(s.radius) if s is not None else 0.012
    use_colour = bool(s.use_colour) if s is not None else True
    state = props.job_state(context)
    provenance = {
        "source": "nerf",
        "source_image": f"NeRF {mid}",
        "model_id": mid,
        "model": "nerf",
        "dataset": str(s.nerf_dataset) if s is not None else "",
        "job": res.job,
        "frame": POINTS_FRAME,
        "backend_status": str(state.backend_status) if state is not None else "",
        "imported_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    collection = getattr(context, "collection", None) or context.scene.collection
    obj = points.create_point_object(f"NeRF points {mid[:8]}", xyz, rgb if use_colour else None,
                                     radius=radius, collection=collection, provenance=provenance)
    select_only(context, obj)
    return obj


class IMAGE2POINTS_OT_import_nerf_points(_ModelRequest, bpy.types.Operator):
    """Import the fitted NeRF's dense surface points as a point object (Blender world frame)"""

    bl_idname = "image2points.import_nerf_points"
    bl_label = "Import NeRF Points"
    bl_options = {"REGISTER", "UNDO"}

    def run(self, context: Any, cfg: preferences.Settings, mid: str) -> str:
        s = props.scene_settings(context)
        obj = import_nerf_points(context, cfg, mid, int(s.nerf_max_points) if s is not None else 100_000)
        return f"Imported {int(obj['i2p_point_count'])} NeRF points as '{obj.name}'"


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_render_nerf, IMAGE2POINTS_OT_import_nerf_points)
