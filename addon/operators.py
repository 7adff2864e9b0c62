"""Operators: reconstruct (modal + blocking), cancel, check backend, novel views, PLY, asset, backend.

No Python threads: the interactive path polls the DEALER socket with ``poll(0)`` from a
window-manager timer (``modal()`` -> ``tick()``); ``execute()`` (scripts, background mode, where
timers never fire) blocks in ``Client.wait`` with a deadline. Both paths end in one import inside
an operator that returns FINISHED with the UNDO flag, so one user action is one undo step.

Errors carry a code (the protocol's, plus OFFLINE for Blender's online-access policy) and show in
the panel (WindowManager state) and via ``self.report``.
"""


import datetime
import hashlib
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bpy
import numpy as np
from bpy.props import FloatProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import image_input, points, preferences, props, visibility
from .core import placement
from .core.client import (
    BackendError,
    Client,
    JobResult,
    endpoint_error,
    guess_media,
    points_from_result,
)
from .image_input import encode_png, image_pixels_u8
from .modal_task import ModalTaskOperator

Report = Callable[..., Any]

# -- shared ZeroMQ state (one context, one client per endpoint; closed on unregister) ---------

_zmq_ctx: Any = None
_clients: dict[tuple[str, str, str], Client] = {}
_active: "ReconstructTask | None" = None


def new_client(cfg: preferences.Settings) -> Client:
    """A client of its own (the caller closes it), after checking the endpoint, Blender's
    online-access policy and the key files.

    Every long job (a modal reconstruction or NeRF fit) polls a socket of its own: on a shared
    one, two jobs running at once would each throw away the other's progress and heartbeats.
    """
    global _zmq_ctx
    bad = endpoint_error(cfg.endpoint)
    if bad:
        raise BackendError("BAD_INPUT", bad)
    ok, why = preferences.endpoint_allowed(cfg.endpoint)
    if not ok:
        raise BackendError("OFFLINE", why)
    try:
        curve = preferences.load_curve(cfg)
    except ValueError as exc:
        raise BackendError("BAD_INPUT", str(exc)) from None
    import zmq

    if _zmq_ctx is None:
        _zmq_ctx = zmq.Context()
    try:
        return Client(cfg.endpoint, connect_timeout=cfg.connect_timeout, curve=curve, context=_zmq_ctx)
    except zmq.ZMQError as exc:
        raise BackendError("BAD_INPUT", f"cannot connect to '{cfg.endpoint}': {exc}") from None


def get_client(cfg: preferences.Settings) -> Client:
    """A cached client per endpoint for short blocking requests (check, render, points)."""
    key = (cfg.endpoint, cfg.server_key_file, cfg.client_key_file)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = new_client(cfg)
    else:  # Blender's online-access setting may have changed since
        ok, why = preferences.endpoint_allowed(cfg.endpoint)
        if not ok:
            raise BackendError("OFFLINE", why)
    client.connect_timeout = cfg.connect_timeout
    return client


def close_clients() -> None:
    global _zmq_ctx
    for client in _clients.values():
        client.close()
    _clients.clear()
    if _zmq_ctx is not None:
        _zmq_ctx.destroy(linger=0)
        _zmq_ctx = None


def effective_settings(context: Any, endpoint: str = "", connect_timeout: float = 0.0,
                       timeout: float = 0.0) -> preferences.Settings:
    """Preferences, with per-call overrides (operator properties used by scripts and tests)."""
    cfg = preferences.settings(context)
    if endpoint.strip():
        cfg.endpoint = endpoint.strip()
    if connect_timeout > 0:
        cfg.connect_timeout = connect_timeout
    if timeout > 0:
        cfg.job_timeout = timeout
    return cfg


# -- small helpers -------------------------------------------------------------------------------

def set_state(context: Any, **values: Any) -> None:
    state = props.job_state(context)
    if state is None:
        return
    for key, value in values.items():
        setattr(state, key, value)
    redraw(context)


def redraw(context: Any) -> None:
    wm = getattr(context, "window_manager", None)
    for window in getattr(wm, "windows", None) or []:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


def error_text(exc: BackendError) -> str:
    return f"[{exc.code}] {exc.message}"


def is_point_object(obj: Any) -> bool:
    return obj is not None and getattr(obj, "type", "") == "MESH" and "i2p_point_count" in obj


def target_objects(context: Any) -> list[Any]:
    objs = [o for o in (getattr(context, "selected_objects", None) or []) if is_point_object(o)]
    active = getattr(context, "active_object", None)
    if is_point_object(active) and active not in objs:
        objs.insert(0, active)
    return objs


def resolve_dir(path: str, sub: str = "") -> str:
    """A folder for output: '//' is next to the .blend, or the temp folder for an unsaved file."""
    if path.startswith("//") and not bpy.data.filepath:
        path = os.path.join(tempfile.gettempdir(), "image2points", path[2:])
    out = os.path.join(bpy.path.abspath(path or "//"), sub) if sub else bpy.path.abspath(path)
    os.makedirs(out, exist_ok=True)
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "points"


def image_datablock_bytes(img: Any) -> bytes:
    """What is sent for an Image datablock: its pixels as Blender shows them, PNG, working size."""
    return image_input.image_png(img)


def file_bytes_for_backend(path: str) -> bytes:
    """What is sent for an image file: decoded by Blender (any format it opens), PNG, working size."""
    return image_input.file_png(path)


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
        return os.path.basename(path), file_bytes_for_backend(path)
    img = s.image if s.source == "IMAGE" else editor_image(context)
    if img is None:
        where = "an Image in the panel" if s.source == "IMAGE" else "an image in an Image Editor"
        raise BackendError("BAD_INPUT", f"no input image: open {where}, or switch the source")
    return str(img.name), image_datablock_bytes(img)


def read_mask(context: Any) -> bytes | None:
    """The panel's optional mask image as bytes for the backend's 'mask' blob (None if unset)."""
    s = props.scene_settings(context)
    img = getattr(s, "mask_image", None) if s is not None else None
    return image_datablock_bytes(img) if img is not None else None


def source_pixels(context: Any) -> np.ndarray | None:
    """The input's pixels for the cut-out preview (None when they cannot be had cheaply)."""
    s = props.scene_settings(context)
    try:
        if s is None or s.source == "FILE":
            return None
        img = s.image if s.source == "IMAGE" else editor_image(context)
        return image_pixels_u8(img) if img is not None else None
    except (BackendError, RuntimeError, AttributeError, ValueError):
        return None


# -- reconstruction --------------------------------------------------------------------------------

class ReconstructTask:
    """One reconstruction, driven either by ``tick()`` (modal timer) or ``run_blocking()``."""

    def __init__(self, context: Any, cfg: preferences.Settings):
        self.cfg = cfg
        self.name, self.data = read_source(context)
        self.mask = read_mask(context)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.client = new_client(cfg)  # its own socket, closed when the task ends (end_client)
        self.info: dict[str, Any] = {}
        self.job = ""
        self.cancel_requested = False
        self.outcome: set[str] = set()
        self.result_object: Any = None
        self.warnings: list[str] = []
        self.error: BackendError | None = None
        self.t0 = time.monotonic()
        self.deadline = self.t0 + cfg.job_timeout
        self.last_heard = self.t0

    @classmethod
    def start(cls, context: Any, cfg: preferences.Settings) -> "ReconstructTask":
        """Read the image, say hello (backend facts for provenance) and submit. Registers itself
        as the active task; raises BackendError (state already shows it)."""
        global _active
        if _active is not None:
            raise BackendError("BUSY", "a reconstruction is already running; cancel it first")
        set_state(context, running=False, error_code="", error_message="", progress=0.0,
                  stage="", status="Connecting...", job_id="", warning="")
        task = None
        try:
            task = cls(context, cfg)
            task.info = task.client.hello(timeout=cfg.connect_timeout)
            set_state(context, backend_status=describe_backend(task.info), backend_ok=True)
            s = props.scene_settings(context)
            params: dict[str, Any] = {"density": int(s.density)} if s is not None else {}
            blobs, media = {"image": task.data}, {"image": guess_media(task.data)}
            if task.mask is not None:
                blobs["mask"], media["mask"] = task.mask, guess_media(task.mask)
            if cfg.strict_cut:
                params["strict"] = True
            task.job = task.client.submit("reconstruct", params, blobs, media)
        except BackendError as exc:
            if task is not None:
                end_client(task.client)
            fail_state(context, exc, cfg.endpoint)
            raise
        task.last_heard = time.monotonic()
        _active = task
        set_state(context, running=True, job_id=task.job, status=f"Reconstructing {task.name}",
                  stage="submitted")
        return task

    # modal path ------------------------------------------------------------------------------
    def tick(self, context: Any) -> set[Any]:
        """One timer tick: never blocks. Returns {'RUNNING_MODAL'}, {'FINISHED'} or {'CANCELLED'}."""
        if self.outcome:
            return self.outcome
        now = time.monotonic()
        try:
            if self.cancel_requested:
                self.client.cancel(self.job)
                raise BackendError("CANCELLED", "cancelled by the user", self.job)
            if now > self.deadline:
                self.client.cancel(self.job)
                raise BackendError("TIMEOUT", f"job did not finish within {self.cfg.job_timeout:.0f} s"
                                   " (raise Job Timeout in the preferences)", self.job)
            if now - self.last_heard > self.cfg.stall_timeout:
                self.client.cancel(self.job)
                raise BackendError("UNREACHABLE", f"backend at {self.cfg.endpoint} went silent for "
                                   f"{self.cfg.stall_timeout:.0f} s (stopped or crashed?)", self.job)
            for ev in self.client.poll_events(0):
                if ev.job != self.job:
                    continue  # this socket carries only this job; nothing else is expected
                self.last_heard = now
                if ev.kind == "progress":
                    p = ev.message.header.get("progress", {})
                    self.on_progress(context, float(p.get("value", 0.0)), str(p.get("stage", "")))
                elif ev.kind == "result":
                    res = JobResult(self.job, ev.message.header, dict(ev.message.blobs),
                                    dict(ev.message.header.get("meta", {})))
                    return self.finish(context, res)
                elif ev.kind == "error":
                    err = ev.message.header.get("error", {})
                    raise BackendError(str(err.get("code", "MODEL")), str(err.get("message", "")),
                                       self.job)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001 - a modal must end cleanly, never leave a stale job
            return self.fail(context, internal_error(exc, self.job))
        return {"RUNNING_MODAL"}

    # blocking path ---------------------------------------------------------------------------
    def run_blocking(self, context: Any) -> set[Any]:
        try:
            res = self.client.wait(
                self.job, timeout=max(0.0, self.deadline - time.monotonic()),
                stall_timeout=self.cfg.stall_timeout,
                on_progress=lambda v, stage, _m: self.on_progress(context, v, stage),
                should_cancel=lambda: self.cancel_requested)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        return self.finish(context, res)

    # shared endings --------------------------------------------------------------------------
    def on_progress(self, context: Any, value: float, stage: str) -> None:
        set_state(context, progress=max(0.0, min(1.0, value)), stage=stage)

    def finish(self, context: Any, res: JobResult) -> set[Any]:
        global _active
        try:
            xyz, rgb = points_from_result(res)
            frame = str(res.meta.get("frame", ""))
            from .core.camera import VIEWER_FRAME

            if frame and frame != VIEWER_FRAME:
                raise BackendError("VERSION", f"result frame '{frame}' is not {VIEWER_FRAME}; "
                                   "update the add-on or the backend", self.job)
            self.result_object = import_result(context, self, xyz, rgb, res)
            self.warnings = [w["message"] for w in res.warnings]
            mask = res.mask
            if mask is not None:
                from .cutout import show_cutout

                try:
                    set_state(context, cutout=show_cutout(mask, source_pixels(context)).name)
                except (RuntimeError, ValueError, AttributeError):  # a preview is not worth a failure
                    set_state(context, cutout="")
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        finally:
            _active = None if _active is self else _active
            end_client(self.client)
        n = int(self.result_object["i2p_point_count"])
        set_state(context, running=False, progress=1.0, stage="done", job_id="",
                  last_object=self.result_object.name, warning="; ".join(self.warnings),
                  status=f"Imported {n} points as '{self.result_object.name}' "
                         f"({time.monotonic() - self.t0:.1f} s)")
        self.outcome = {"FINISHED"}
        return self.outcome

    def fail(self, context: Any, exc: BackendError) -> set[Any]:
        global _active
        if _active is self:
            _active = None
        end_client(self.client)
        self.error = exc
        fail_state(context, exc, self.cfg.endpoint)
        self.outcome = {"CANCELLED"}
        return self.outcome


def end_client(client: Client) -> None:
    """Close a task's own socket, leaving a second for a last cancel to go out (the shared
    context sends it in the background; nothing here blocks)."""
    client.close(linger=1.0)


def internal_error(exc: Exception, job: str) -> BackendError:
    return BackendError("INTERNAL", f"unexpected {type(exc).__name__} in the add-on: {exc}", job)


def fail_state(context: Any, exc: BackendError, endpoint: str) -> None:
    cancelled = exc.code == "CANCELLED"
    values: dict[str, Any] = dict(running=False, job_id="", stage="cancelled" if cancelled else "failed",
                                  status="Cancelled" if cancelled else "Failed",
                                  error_code="" if cancelled else exc.code,
                                  error_message="" if cancelled else exc.message)
    if exc.code in {"UNREACHABLE", "OFFLINE"}:
        values.update(backend_ok=False, backend_status=unreachable_line(endpoint, exc))
    set_state(context, **values)


def unreachable_line(endpoint: str, exc: BackendError | None = None) -> str:
    if exc is not None and exc.code == "OFFLINE":
        return exc.message
    return f"Not reachable at {endpoint}. Start it with: image2points serve"


def describe_backend(info: dict[str, Any]) -> str:
    model = info.get("model") or {}
    model_text = str(model.get("name") or model.get("state") or "?") if isinstance(model, dict) else str(model)
    return (f"Connected: {info.get('name', 'backend')} {info.get('version', '?')} on "
            f"{info.get('device', '?')}, model {model_text}, protocol v{info.get('protocol', '?')}")


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


def select_only(context: Any, obj: Any) -> None:
    """Make a freshly imported object the selection and the active object, as Blender's own
    importers do (no-op without a view layer, e.g. some script contexts)."""
    view_layer = getattr(context, "view_layer", None)
    if view_layer is not None:
        for other in view_layer.objects:
            if other.select_get():
                other.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj


def report_outcome(report: Report, task: ReconstructTask) -> None:
    if task.outcome == {"FINISHED"} and task.result_object is not None:
        report({"INFO"}, f"Image2Points: imported {task.result_object['i2p_point_count']} points "
                         f"as '{task.result_object.name}'")
        for w in task.warnings:
            report({"WARNING"}, f"Image2Points: {w}")
    elif task.error is not None:
        level = "WARNING" if task.error.code == "CANCELLED" else "ERROR"
        report({level}, f"Image2Points: {error_text(task.error)}")


class _EndpointProps:
    """Per-call overrides for scripts and tests; empty/0 = use the add-on preferences."""

    endpoint: StringProperty(name="Endpoint", default="",  # type: ignore[valid-type]
                             options={"HIDDEN", "SKIP_SAVE"})
    connect_timeout: FloatProperty(name="Connect Timeout", default=0.0, min=0.0,  # type: ignore[valid-type]
                                   options={"HIDDEN", "SKIP_SAVE"})
    timeout: FloatProperty(name="Job Timeout", default=0.0, min=0.0,  # type: ignore[valid-type]
                           options={"HIDDEN", "SKIP_SAVE"})

    def settings(self, context: Any) -> preferences.Settings:
        return effective_settings(context, self.endpoint, self.connect_timeout, self.timeout)


class IMAGE2POINTS_OT_reconstruct(ModalTaskOperator, _EndpointProps, bpy.types.Operator):
    """Send the chosen image to the backend and import the predicted coloured point cloud"""

    bl_idname = "image2points.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}

    _task: ReconstructTask | None = None

    @classmethod
    def poll(cls, context: Any) -> bool:
        return _active is None and props.scene_settings(context) is not None

    def begin(self, context: Any) -> set[Any]:
        """Read, hello, submit (what invoke() does before the timer takes over)."""
        try:
            self._task = ReconstructTask.start(context, self.settings(context))
        except BackendError as exc:
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        return {"RUNNING_MODAL"}

    def report_task(self, task: ReconstructTask) -> None:
        report_outcome(self.report, task)


class IMAGE2POINTS_OT_cancel(bpy.types.Operator):
    """Cancel the running reconstruction (nothing is imported)"""

    bl_idname = "image2points.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return _active is not None

    def execute(self, context: Any) -> set[Any]:
        task = _active
        if task is None:
            return {"CANCELLED"}
        task.cancel_requested = True
        set_state(context, status="Cancelling...", stage="cancelling")
        return {"FINISHED"}


class IMAGE2POINTS_OT_check_backend(_EndpointProps, bpy.types.Operator):
    """Ask the backend who it is (version, device, model) and show it in the panel"""

    bl_idname = "image2points.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        cfg = self.settings(context)
        try:
            info = get_client(cfg).hello(timeout=cfg.connect_timeout)
        except BackendError as exc:
            line = unreachable_line(cfg.endpoint, exc) if exc.code in {"UNREACHABLE", "OFFLINE"} \
                else error_text(exc)
            set_state(context, backend_ok=False, backend_status=line)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        line = describe_backend(info)
        set_state(context, backend_ok=True, backend_status=line, error_code="", error_message="")
        self.report({"INFO"}, line)
        return {"FINISHED"}


# -- novel views -------------------------------------------------------------------------------

_RENDER_ATTRS = ("engine", "resolution_x", "resolution_y", "resolution_percentage", "filepath",
                 "film_transparent")


@contextmanager
def scene_render_restored(scene: Any) -> Iterator[None]:
    """Leave the artist's render settings, camera and render visibility as they were."""
    r = scene.render
    saved = {a: getattr(r, a) for a in _RENDER_ATTRS}
    fmt = (r.image_settings.file_format, r.image_settings.color_mode)
    cycles = getattr(scene, "cycles", None)
    cyc_samples = cycles.samples if cycles is not None else None
    eevee_samples = scene.eevee.taa_render_samples
    camera = scene.camera
    hidden = {o.name: o.hide_render for o in scene.objects}
    try:
        yield
    finally:
        for a, v in saved.items():
            setattr(r, a, v)
        r.image_settings.file_format, r.image_settings.color_mode = fmt
        if cycles is not None and cyc_samples is not None:
            cycles.samples = cyc_samples
        scene.eevee.taa_render_samples = eevee_samples
        scene.camera = camera
        for name, value in hidden.items():
            obj = scene.objects.get(name)
            if obj is not None:
                obj.hide_render = value


def contact_sheet(paths: list[Any], out_path: str, cols: int | None = None) -> str:
    """Tile the rendered PNGs (loaded as Image datablocks; or (H, W, 4) uint8 arrays) into one
    PNG, written with numpy; ``cols`` tiles a row (default: a square-ish grid)."""
    tiles = [p if isinstance(p, np.ndarray) else image_pixels_u8(load_image(p)) for p in paths]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.zeros((rows * h, cols * w, 4), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h:r * h + t.shape[0], c * w:c * w + t.shape[1]] = t
    with open(out_path + ".part", "wb") as f:
        f.write(encode_png(sheet))
    os.replace(out_path + ".part", out_path)
    load_image(out_path)
    return out_path


def load_image(path: str) -> Any:
    img = bpy.data.images.load(path, check_existing=True)
    img.reload()  # a re-render overwrote the file
    return img


def render_views(context: Any, obj: Any) -> list[str]:
    """Camera ring around ``obj`` with the scene settings; returns PNG paths + the contact sheet."""
    from . import render

    scene = context.scene
    s = props.scene_settings(context)
    prefix = safe_name(obj.name)
    out_dir = resolve_dir(s.output_dir, prefix)
    rig = bpy.data.collections.get(render.RIG_COLLECTION)
    if rig is not None:  # re-running replaces this object's cameras instead of piling up
        for cam in [o for o in rig.objects if o.name.startswith(f"{prefix} view ")]:
            bpy.data.objects.remove(cam, do_unlink=True)
    with scene_render_restored(scene), render.colour_restored(scene):
        r = scene.render
        if s.view_colour == "STANDARD":
            render.standard_colour(scene)
        if s.view_engine != "SCENE":
            r.engine = s.view_engine
        r.resolution_x = r.resolution_y = int(s.view_resolution)
        r.resolution_percentage = 100
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.film_transparent = False
        if r.engine == "CYCLES":
            scene.cycles.samples = int(s.view_samples)
        elif r.engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = int(s.view_samples)
        if scene.world is None:
            render.ensure_lighting(scene)
        with visibility.only_renderable(scene, obj):  # the default Cube must not hide the result
            paths = render.render_ring(obj, out_dir, prefix, int(s.view_count), float(s.view_elevation),
                                       report=print)
    for p in paths:
        load_image(p)
    sheet = contact_sheet(paths, os.path.join(out_dir, f"{prefix}_contact_sheet.png"))
    return [*paths, sheet]


class IMAGE2POINTS_OT_render_views(bpy.types.Operator):
    """Render a ring of novel views around the selected point object (PNGs + a contact sheet)"""

    bl_idname = "image2points.render_views"
    bl_label = "Render Novel Views"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(target_objects(context)) and props.scene_settings(context) is not None

    def execute(self, context: Any) -> set[Any]:
        obj = target_objects(context)[0]
        try:
            paths = render_views(context, obj)
        except (OSError, RuntimeError) as exc:
            self.report({"ERROR"}, f"Image2Points: rendering failed: {exc}")
            return {"CANCELLED"}
        set_state(context, status=f"Rendered {len(paths) - 1} views to {os.path.dirname(paths[0])}")
        self.report({"INFO"}, f"Image2Points: {len(paths) - 1} views and a contact sheet in "
                              f"{os.path.dirname(paths[0])}")
        return {"FINISHED"}


# -- PLY export ----------------------------------------------------------------------------------

_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4",
              "uint": "<u4", "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1",
              "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
              "float32": "<f4", "float64": "<f8"}


def read_ply_vertices(path: str) -> np.ndarray:
    """The vertex element of a binary little-endian PLY as a numpy record array."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError("not a binary little-endian PLY")
    fields: list[tuple[str, str]] = []
    count, in_vertex = -1, False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            if in_vertex:
                break
            in_vertex = parts[1] == "vertex"
            count = int(parts[2]) if in_vertex else count
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list":
                raise ValueError("list property in the vertex element")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if count < 0:
        raise ValueError("no vertex element")
    return np.frombuffer(data, np.dtype(fields), count=count, offset=end)


def ply_matches(path: str, obj: Any) -> bool:
    """Does the file hold exactly this cloud in world space, with colours?"""
    try:
        v = read_ply_vertices(path)
    except (OSError, ValueError, KeyError):
        return False
    names = set(v.dtype.names or ())
    if not {"x", "y", "z", "red", "green", "blue"} <= names:
        return False
    xyz, rgb = points.world_points(obj)
    if len(v) != len(xyz):
        return False
    got = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    if not np.allclose(got, xyz, atol=1e-4 * max(1.0, float(np.abs(xyz).max(initial=1.0)))):
        return False
    if rgb is not None:
        col = np.stack([v["red"], v["green"], v["blue"]], 1).astype(int)
        if np.abs(col - rgb.astype(int)).max(initial=0) > 2:
            return False
    return True


@contextmanager
def only_selected(context: Any, obj: Any) -> Iterator[None]:
    view_layer = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    for o in selected:
        o.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    try:
        yield
    finally:
        obj.select_set(False)
        for o in selected:
            o.select_set(True)
        view_layer.objects.active = active


def export_ply(context: Any, obj: Any, path: str) -> str:
    """Blender's own PLY exporter when its file checks out (x,y,z + colours), else plyio.
    Returns which writer was used: 'blender' or 'image2points'."""
    from .core.plyio import write_ply

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with only_selected(context, obj):
            bpy.ops.wm.ply_export(filepath=path, export_selected_objects=True, apply_modifiers=False,
                                  export_colors="SRGB", export_normals=False, export_uv=False,
                                  export_triangulated_mesh=False, ascii_format=False,
                                  forward_axis="Y", up_axis="Z", global_scale=1.0)
        if ply_matches(path, obj):
            return "blender"
    except (RuntimeError, AttributeError, TypeError):
        pass
    xyz, rgb = points.world_points(obj)
    if rgb is None:
        rgb = np.full((len(xyz), 3), 255, np.uint8)
    write_ply(path, xyz, rgb, comment=f"Image2Points {obj.name} Blender world coordinates (Z up, metres)")
    return "image2points"


class IMAGE2POINTS_OT_export_ply(bpy.types.Operator, ExportHelper):  # type: ignore[misc]
    """Export the selected point object as a coloured PLY (world coordinates, Z up)"""

    bl_idname = "image2points.export_ply"
    bl_label = "Export PLY"
    bl_options = {"REGISTER"}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(target_objects(context))

    def invoke(self, context: Any, event: Any) -> set[Any]:  # type: ignore[override]
        if not self.filepath:  # type: ignore[has-type]
            s = props.scene_settings(context)
            obj = target_objects(context)[0]
            base = resolve_dir(s.output_dir) if s is not None else tempfile.gettempdir()
            self.filepath = os.path.join(base, safe_name(obj.name) + ".ply")  # type: ignore[has-type]
        return ExportHelper.invoke(self, context, event)  # type: ignore[func-returns-value,return-value]

    def execute(self, context: Any) -> set[Any]:
        obj = target_objects(context)[0]
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".ply")
        try:
            writer = export_ply(context, obj, path)
        except OSError as exc:
            self.report({"ERROR"}, f"Image2Points: cannot write {path}: {exc}")
            return {"CANCELLED"}
        set_state(context, status=f"Exported {obj['i2p_point_count']} points to {path}")
        self.report({"INFO"}, f"Image2Points: wrote {path} ({writer} PLY writer)")
        return {"FINISHED"}


# -- assets --------------------------------------------------------------------------------------

def mark_asset(obj: Any) -> None:
    """Mark as an asset with a description and tags from the provenance (no preview needed);
    a point object or a mesh made from one (Make Mesh)."""
    if obj.asset_data is None:
        obj.asset_mark()
    ad = obj.asset_data
    is_mesh = "i2p_mesh_faces" in obj
    what = (f"mesh: {obj.get('i2p_mesh_faces', 0)} faces" if is_mesh
            else f"point cloud: {obj.get('i2p_point_count', 0)} points")
    ad.description = (f"Image2Points {what} of '{obj.get('i2p_source_image', '?')}', "
                      f"model {obj.get('i2p_model', '?') or '?'}, job {obj.get('i2p_job', '?')}")
    for tag in ("Image2Points", "mesh" if is_mesh else "point cloud"):
        if tag not in ad.tags:
            ad.tags.new(tag)
    if hasattr(ad, "author") and not ad.author:
        ad.author = "Image2Points"


def asset_targets(context: Any) -> list[Any]:
    """Selected point objects and meshes made from them."""
    from .mesh import mesh_targets

    return target_objects(context) + [o for o in mesh_targets(context) if o not in target_objects(context)]


class IMAGE2POINTS_OT_mark_asset(bpy.types.Operator):
    """Mark the selected point objects or meshes as assets, with provenance and a preview from the input's direction"""

    bl_idname = "image2points.mark_asset"
    bl_label = "Mark as Asset"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return bool(asset_targets(context))

    def execute(self, context: Any) -> set[Any]:
        from .asset_preview import set_preview

        objs = asset_targets(context)
        for obj in objs:
            mark_asset(obj)
            set_preview(context, obj)
        self.report({"INFO"}, f"Image2Points: marked {len(objs)} object(s) as assets")
        return {"FINISHED"}


# -- local backend and keys -------------------------------------------------------------------------

class IMAGE2POINTS_OT_start_backend(bpy.types.Operator):
    """Start the local backend command from the preferences as a subprocess"""

    bl_idname = "image2points.start_backend"
    bl_label = "Start Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        cfg = preferences.settings(context)
        try:
            proc = preferences.start_local_backend(cfg.local_command, preferences.installed_exe())
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Image2Points: cannot start '{cfg.local_command}': {exc}")
            return {"CANCELLED"}
        set_state(context, backend_status=f"Local backend starting (pid {proc.pid}); press Check")
        self.report({"INFO"}, f"Image2Points: started local backend (pid {proc.pid})")
        return {"FINISHED"}


class IMAGE2POINTS_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend that Blender started"""

    bl_idname = "image2points.stop_backend"
    bl_label = "Stop Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        preferences.stop_local_backend()
        set_state(context, backend_ok=False, backend_status="Local backend stopped")
        return {"FINISHED"}


class IMAGE2POINTS_OT_create_keys(bpy.types.Operator):
    """Create a CurveZMQ key pair for this Blender in the extension's user folder"""

    bl_idname = "image2points.create_keys"
    bl_label = "Create Client Key Pair"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        import zmq.auth

        public, secret = zmq.auth.create_certificates(preferences.keys_dir(), "blender")
        addon = context.preferences.addons.get(preferences.base_package)
        if addon is not None:
            addon.preferences.client_key_file = str(secret)
        self.report({"INFO"}, f"Image2Points: copy {public} into the backend's --curve-clients folder")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (
    IMAGE2POINTS_OT_reconstruct,
    IMAGE2POINTS_OT_cancel,
    IMAGE2POINTS_OT_check_backend,
    IMAGE2POINTS_OT_render_views,
    IMAGE2POINTS_OT_export_ply,
    IMAGE2POINTS_OT_mark_asset,
    IMAGE2POINTS_OT_start_backend,
    IMAGE2POINTS_OT_stop_backend,
    IMAGE2POINTS_OT_create_keys,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    global _active
    _active = None
    close_clients()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
