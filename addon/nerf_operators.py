"""NeRF operators (issue 6): capture a posed dataset, import one, fit, render from it, import points.

Same patterns as operators.py: no Python threads; the fit's interactive path is a window-manager
timer calling ``tick()`` (never blocks), ``execute()`` blocks in ``Client.wait`` with a deadline
(scripts, background mode, the bpy wheel); render and points are short and block with a deadline.
Every user action is one operator with UNDO, so one undo step. The backend never opens a path:
images travel as PNG bytes; the parameter names live in nerf_capture's ``*_request`` functions.
Job state lives in the ``nerf_*`` fields of the WindowManager state (never saved with the file).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import bpy
import numpy as np
from bpy.props import FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import points, preferences, props
from .core import nerf_capture as nc
from .core.client import BackendError, JobResult, points_from_result
from .modal_task import ModalTaskOperator
from .operators import (
    _EndpointProps,
    describe_backend,
    end_client,
    error_text,
    get_client,
    internal_error,
    new_client,
    redraw,
    resolve_dir,
    safe_name,
    scene_render_restored,
    select_only,
    unreachable_line,
)

CAMERA_COLLECTION = "Image2Points NeRF Cameras"
PREVIEW_IMAGE = "Image2Points NeRF Preview"
POINTS_FRAME = "blender-world"
_active: FitTask | CaptureJob | None = None


# -- state ------------------------------------------------------------------------------------

def set_nerf_state(context: Any, **values: Any) -> None:
    state = props.job_state(context)
    if state is None:
        return
    for key, value in values.items():
        setattr(state, f"nerf_{key}", value)
    redraw(context)


def nerf_fail_state(context: Any, exc: BackendError, endpoint: str) -> None:
    cancelled = exc.code == "CANCELLED"
    set_nerf_state(context, running=False, job_id="", stage="cancelled" if cancelled else "failed",
                   status="Cancelled" if cancelled else "Failed",
                   error_code="" if cancelled else exc.code,
                   error_message="" if cancelled else exc.message)
    if exc.code in {"UNREACHABLE", "OFFLINE"}:
        state = props.job_state(context)
        if state is not None:
            state.backend_ok = False
            state.backend_status = unreachable_line(endpoint, exc)


def bad_input(exc: Exception) -> BackendError:
    return BackendError("BAD_INPUT", str(exc))


def model_id(context: Any, override: str = "") -> str:
    state = props.job_state(context)
    mid = override or (str(state.nerf_model_id) if state is not None else "")
    if not mid:
        raise BackendError("BAD_INPUT", "no fitted NeRF yet: run Fit NeRF first")
    return mid


# -- capture ------------------------------------------------------------------------------------

def capture_targets(context: Any) -> list[Any]:
    """The selection's renderable objects, else every visible renderable object in the scene."""
    kinds = {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME", "GPENCIL"}
    objs = [o for o in (getattr(context, "selected_objects", None) or []) if o.type in kinds]
    if not objs:
        objs = [o for o in context.scene.objects
                if o.type in kinds and not o.hide_render and o.visible_get()]
    if not objs:
        raise nc.DatasetError("nothing to capture: select the objects to film (or add some)")
    return objs


def world_bounds(objs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    corners = []
    for obj in objs:
        m = np.array(obj.matrix_world, dtype=np.float64)
        bb = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64)
        corners.append(bb @ m[:3, :3].T + m[:3, 3])
    allc = np.concatenate(corners)
    return allc.min(0), allc.max(0)


_EXTRA_RENDER = ("pixel_aspect_x", "pixel_aspect_y", "use_border", "use_crop_to_border")


@contextmanager
def capture_settings_restored(scene: Any) -> Iterator[None]:
    """operators.scene_render_restored plus what a capture also touches."""
    r = scene.render
    saved = {a: getattr(r, a) for a in _EXTRA_RENDER}
    depth = r.image_settings.color_depth
    with scene_render_restored(scene):
        try:
            yield
        finally:
            for a, v in saved.items():
                setattr(r, a, v)
            r.image_settings.color_depth = depth


def new_camera(name: str, c2w: np.ndarray, settings: dict[str, Any], collection: Any,
               clip_end: float = 100.0) -> Any:
    from mathutils import Matrix

    cam: Any = bpy.data.cameras.new(name)
    cam.type = "PERSP"
    for key in ("lens", "sensor_width", "sensor_fit", "shift_x", "shift_y"):
        setattr(cam, key, settings[key])
    cam.clip_start = min(0.1, clip_end / 1000)
    cam.clip_end = clip_end
    obj = bpy.data.objects.new(name, cam)
    obj.matrix_world = Matrix([[float(v) for v in row] for row in c2w])
    collection.objects.link(obj)
    return obj


def camera_collection(scene: Any, name: str) -> Any:
    """A child of "Image2Points NeRF Cameras" named ``name``, emptied if it exists."""
    parent = bpy.data.collections.get(CAMERA_COLLECTION)
    if parent is None:
        parent = bpy.data.collections.new(CAMERA_COLLECTION)
    if parent.name not in scene.collection.children:
        scene.collection.children.link(parent)
    coll = bpy.data.collections.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
    if coll.name not in parent.children:
        parent.children.link(coll)
    for obj in list(coll.objects):
        data = obj.data
        bpy.data.objects.remove(obj, do_unlink=True)
        if data is not None and data.users == 0 and isinstance(data, bpy.types.Camera):
            bpy.data.cameras.remove(data)
    return coll


class CaptureJob:
    """A capture, one frame per ``step()``: the modal path renders a frame per timer tick (the UI
    stays live and ESC/Cancel works), ``run()`` renders them all (scripts, background mode)."""

    def __init__(self, context: Any, out_dir: str, views: int, test_views: int, resolution: int,
                 samples: int):
        from .core.camera import fit_radius

        self.out_dir, self.resolution, self.samples = out_dir, int(resolution), int(samples)
        lo, hi = world_bounds(capture_targets(context))
        centre = 0.5 * (lo + hi)
        half = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
        self.dist = fit_radius(half, lens_mm=50.0, sensor_mm=nc.SENSOR_WIDTH_MM, margin=1.15)
        self.intr = nc.intrinsics_from_params(50.0, nc.SENSOR_WIDTH_MM, 24.0, "HORIZONTAL",
                                              self.resolution, self.resolution)
        self.plan = [("train", i, m) for i, m in enumerate(nc.hemisphere_poses(views, self.dist, centre))]
        self.plan += [("test", i, m) for i, m in
                      enumerate(nc.orbit_poses(test_views, self.dist * 1.1, centre, elev_deg=28.0))]
        margin = 0.05 * (hi - lo) + 1e-3
        self.aabb = (lo - margin, hi + margin)
        self.frames: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
        self.angle_x = self.intr.angle_x
        self.done = 0
        self.cancel_requested = False
        self.t0 = time.monotonic()
        self._stack = ExitStack()
        self._coll: Any = None

    def begin(self, context: Any) -> None:
        scene = context.scene
        os.makedirs(os.path.join(self.out_dir, nc.IMAGE_DIR), exist_ok=True)
        self._coll = camera_collection(scene, f"NeRF {os.path.basename(os.path.normpath(self.out_dir))}")
        self._stack.enter_context(capture_settings_restored(scene))
        r = scene.render
        r.resolution_x = r.resolution_y = self.resolution
        r.resolution_percentage = 100
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.use_border = False
        r.film_transparent = True
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.image_settings.color_depth = "8"
        if r.engine == "CYCLES":
            scene.cycles.samples = self.samples
        elif r.engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = self.samples

    def step(self, context: Any) -> bool:
        """Render the next frame; True when every frame is done."""
        if self.done >= len(self.plan):
            return True
        scene, r = context.scene, context.scene.render
        split, i, pose = self.plan[self.done]
        stem = nc.frame_stem(split, i)
        cam = new_camera(f"NeRF {stem}", pose, nc.camera_settings(self.intr), self._coll,
                         clip_end=max(100.0, 4 * self.dist))
        context.view_layer.update()
        scene.camera = cam
        r.filepath = os.path.join(self.out_dir, nc.IMAGE_DIR, stem + ".png")
        bpy.ops.render.render(write_still=True)
        # what Blender rendered with: the camera's own lens and matrix, read back
        if nc.intrinsics_from_camera(cam.data, r) != self.intr:
            raise nc.DatasetError("the rendered camera does not match the planned one")
        self.angle_x = float(cam.data.angle_x)
        self.frames[split].append((f"./{nc.IMAGE_DIR}/{stem}", nc.clean_pose(cam.matrix_world)))
        self.done += 1
        return self.done >= len(self.plan)

    def finish(self) -> None:
        """Write transforms_train.json (+ transforms_test.json) and restore the scene.

        Without held-out views an old transforms_test.json in the folder is deleted: it would
        describe another capture (cameras, resolution) and be scored against this one's model."""
        try:
            for split, frames in self.frames.items():
                path = os.path.join(self.out_dir, f"transforms_{split}.json")
                if frames or split == "train":
                    doc = nc.transforms_doc(self.intr, frames, self.aabb,
                                            {"camera_angle_x": self.angle_x})
                    nc.write_json(path, doc)
                elif os.path.lexists(path):
                    os.remove(path)
        finally:
            self.close()

    def close(self) -> None:
        self._stack.close()

    def run(self, context: Any) -> None:
        self.begin(context)
        try:
            while not self.step(context):
                pass
        except BaseException:
            self.close()
            raise
        self.finish()

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.frames["train"]), len(self.frames["test"])


def release(job: Any) -> None:
    """Forget ``job`` as the active NeRF job (if it still is)."""
    global _active
    if _active is job:
        _active = None


def capture_views(context: Any, out_dir: str, views: int, test_views: int, resolution: int,
                  samples: int) -> tuple[str, int, int]:
    """Render a NeRF dataset of the selection (blocking); returns (folder, #train, #test)."""
    job = CaptureJob(context, out_dir, views, test_views, resolution, samples)
    job.run(context)
    return (out_dir, *job.counts)


class IMAGE2POINTS_OT_capture_views(ModalTaskOperator, bpy.types.Operator):
    """Render the selection from cameras on the upper hemisphere into a NeRF dataset (images/ + transforms_train.json + transforms_test.json); Esc cancels"""  # noqa: E501 - one line: a docstring's line break shows in the tooltip

    bl_idname = "image2points.capture_views"
    bl_label = "Capture Views"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Folder", default="", subtype="DIR_PATH",  # type: ignore[valid-type]
                              options={"HIDDEN", "SKIP_SAVE"})

    _task: CaptureJob | None = None
    timer_interval = 0.05

    @classmethod
    def poll(cls, context: Any) -> bool:
        return props.scene_settings(context) is not None and _active is None

    def prepare(self, context: Any) -> CaptureJob | None:
        s = props.scene_settings(context)
        try:
            out = bpy.path.abspath(self.directory) if self.directory else resolve_dir(s.nerf_dir)
            return CaptureJob(context, out, int(s.nerf_views), int(s.nerf_test_views),
                              int(s.nerf_resolution), int(s.nerf_samples))
        except (nc.DatasetError, OSError) as exc:
            self.failed(context, exc)
            return None

    def failed(self, context: Any, exc: Exception) -> set[Any]:
        set_nerf_state(context, running=False, error_code="BAD_INPUT", error_message=str(exc),
                       status="Capture failed", stage="failed")
        self.report({"ERROR"}, f"Image2Points: capture failed: {exc}")
        return {"CANCELLED"}

    def done(self, context: Any, job: CaptureJob) -> set[Any]:
        s = props.scene_settings(context)
        s.nerf_dataset = job.out_dir
        n_train, n_test = job.counts
        msg = (f"Captured {n_train} + {n_test} held-out views in {time.monotonic() - job.t0:.0f} s "
               f"to {job.out_dir}")
        set_nerf_state(context, running=False, progress=1.0, stage="done", status=msg,
                       error_code="", error_message="")
        self.report({"INFO"}, f"Image2Points: {msg}")
        return {"FINISHED"}

    def execute(self, context: Any) -> set[Any]:
        job = self.prepare(context)
        if job is None:
            return {"CANCELLED"}
        try:
            job.run(context)
        except (nc.DatasetError, OSError, RuntimeError) as exc:
            return self.failed(context, exc)
        return self.done(context, job)

    def begin(self, context: Any) -> set[Any]:
        """Plan, set the render up and register as the active NeRF job (what invoke() does
        before the timer takes over)."""
        global _active
        job = self.prepare(context)
        if job is None:
            return {"CANCELLED"}
        try:
            job.begin(context)
        except (nc.DatasetError, OSError, RuntimeError) as exc:
            job.close()
            return self.failed(context, exc)
        self._task = job
        _active = job
        set_nerf_state(context, running=True, progress=0.0, stage="capturing", error_code="",
                       error_message="", status=f"Capturing {len(job.plan)} views")
        return {"RUNNING_MODAL"}

    def tick(self, context: Any) -> set[Any]:
        """Render one frame (the timer's work; callable directly)."""
        job = self._task
        if job is None:
            return {"CANCELLED"}
        outcome = self._tick(context, job)
        if outcome != {"RUNNING_MODAL"}:
            release(job)
        return outcome

    def _tick(self, context: Any, job: CaptureJob) -> set[Any]:
        try:
            if job.cancel_requested:
                job.close()
                set_nerf_state(context, running=False, stage="cancelled", status="Capture cancelled")
                self.report({"WARNING"}, "Image2Points: capture cancelled (no transforms written)")
                return {"CANCELLED"}
            if not job.step(context):
                set_nerf_state(context, progress=job.done / len(job.plan),
                               stage=f"view {job.done}/{len(job.plan)}")
                return {"RUNNING_MODAL"}
            job.finish()
        except (nc.DatasetError, OSError, RuntimeError) as exc:
            job.close()
            return self.failed(context, exc)
        return self.done(context, job)

    def cancel(self, context: Any) -> None:
        if self._task is not None:
            self._task.close()
            release(self._task)
        self._remove_timer(context)


# -- import transforms.json ---------------------------------------------------------------------

def import_transforms(context: Any, path: str) -> list[Any]:
    """Create the cameras of a transforms file (sensor 36 mm, fit HORIZONTAL) in a collection;
    sets the scene's resolution to the dataset's and makes the first camera active."""
    ds = nc.read_transforms(path, need_images=False)
    scene = context.scene
    settings = nc.camera_settings(ds.intrinsics)
    stem = os.path.splitext(os.path.basename(ds.path))[0]
    folder = os.path.basename(os.path.dirname(os.path.abspath(ds.path)))
    coll = camera_collection(scene, f"NeRF {folder} {stem}".strip())
    cams = []
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for _p, m in ds.frames:
        lo, hi = np.minimum(lo, m[:3, 3]), np.maximum(hi, m[:3, 3])
    clip_end = max(100.0, 4.0 * float(np.linalg.norm(hi - lo)))
    for i, (img, m) in enumerate(ds.frames):
        name = os.path.splitext(os.path.basename(img))[0] or f"frame_{i:03d}"
        cams.append(new_camera(f"NeRF {name}", nc.clean_pose(m), settings, coll, clip_end))
    r = scene.render
    for key in ("resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x",
                "pixel_aspect_y"):
        setattr(r, key, settings[key])
    scene.camera = cams[0]
    return cams


class IMAGE2POINTS_OT_import_transforms(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Create the cameras of a NeRF transforms.json (and set the scene resolution to match)"""

    bl_idname = "image2points.import_transforms"
    bl_label = "Import transforms.json"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})  # type: ignore[valid-type]

    def execute(self, context: Any) -> set[Any]:
        path = bpy.path.abspath(self.filepath)  # type: ignore[attr-defined]
        try:
            cams = import_transforms(context, path)
        except (nc.DatasetError, OSError) as exc:
            self.report({"ERROR"}, f"Image2Points: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Image2Points: imported {len(cams)} cameras from {path}")
        return {"FINISHED"}


# -- fit ----------------------------------------------------------------------------------------

def model_dir(context: Any) -> str:
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


def show_preview(blob: Any) -> None:
    """A progress preview (PNG bytes or an image array) into the preview Image datablock."""
    rgba = nc.as_rgba_float(blob)
    h, w = rgba.shape[:2]
    img = bpy.data.images.get(PREVIEW_IMAGE)
    if img is None or tuple(img.size) != (w, h):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_IMAGE, w, h, alpha=True)
    pixels: Any = img.pixels
    pixels.foreach_set(nc.blender_pixels(rgba))
    img.update()


class FitTask:
    """One nerf_fit job, driven either by ``tick()`` (modal timer) or ``run_blocking()``."""

    def __init__(self, context: Any, cfg: preferences.Settings, dataset: str, field: str,
                 minutes: float, steps: int):
        self.cfg = cfg
        self.dataset = dataset
        self.field = field
        try:
            ds = nc.read_transforms(bpy.path.abspath(dataset) if dataset else "", "train")
            self.params, self.blobs, self.media = nc.fit_request(ds, field, minutes, steps)
        except (nc.DatasetError, OSError) as exc:
            raise bad_input(exc) from None
        self.n_frames = len(ds.frames)
        self.client = new_client(cfg)  # its own socket (see operators.new_client), closed at the end
        self.info: dict[str, Any] = {}
        self.job = ""
        self.cancel_requested = False
        self.outcome: set[str] = set()
        self.error: BackendError | None = None
        self.model_id = ""
        self.progress_events = 0
        budget = 60.0 * minutes + 120.0 if minutes > 0 else 0.0
        self.timeout = max(cfg.job_timeout, budget)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.timeout
        self.last_heard = self.t0

    @classmethod
    def start(cls, context: Any, cfg: preferences.Settings, dataset: str, field: str,
              minutes: float, steps: int) -> FitTask:
        global _active
        if _active is not None:
            raise BackendError("BUSY", "a NeRF fit is already running; cancel it first")
        set_nerf_state(context, running=False, error_code="", error_message="", progress=0.0,
                       stage="", status="Connecting...", job_id="", progress_events=0)
        task = None
        try:
            task = cls(context, cfg, dataset, field, minutes, steps)
            task.info = task.client.hello(timeout=cfg.connect_timeout)
            state = props.job_state(context)
            if state is not None:
                state.backend_ok, state.backend_status = True, describe_backend(task.info)
            task.job = task.client.submit("nerf_fit", task.params, task.blobs, task.media)
        except BackendError as exc:
            if task is not None:
                end_client(task.client)
            nerf_fail_state(context, exc, cfg.endpoint)
            raise
        task.blobs = {}  # sent; the client keeps its own frames for a re-send
        task.last_heard = time.monotonic()
        task.t0 = task.last_heard
        task.deadline = task.t0 + task.timeout
        _active = task
        set_nerf_state(context, running=True, job_id=task.job, stage="submitted",
                       status=f"Fitting a {field} NeRF to {task.n_frames} views")
        return task

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
                raise BackendError("TIMEOUT", f"fit did not finish within {self.timeout:.0f} s",
                                   self.job)
            if now - self.last_heard > self.cfg.stall_timeout:
                self.client.cancel(self.job)
                raise BackendError("UNREACHABLE", f"backend at {self.cfg.endpoint} went silent for "
                                   f"{self.cfg.stall_timeout:.0f} s (stopped or crashed?)", self.job)
            for ev in self.client.poll_events(0):
                if ev.job != self.job:
                    continue
                self.last_heard = now
                if ev.kind == "progress":
                    p = ev.message.header.get("progress", {})
                    self.on_progress(context, float(p.get("value", 0.0)), str(p.get("stage", "")),
                                     ev.message)
                elif ev.kind == "result":
                    return self.finish(context, JobResult(
                        self.job, ev.message.header, dict(ev.message.blobs),
                        dict(ev.message.header.get("meta", {}))))
                elif ev.kind == "error":
                    err = ev.message.header.get("error", {})
                    raise BackendError(str(err.get("code", "MODEL")), str(err.get("message", "")),
                                       self.job)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001 - a modal must end cleanly
            return self.fail(context, internal_error(exc, self.job))
        return {"RUNNING_MODAL"}

    def run_blocking(self, context: Any) -> set[Any]:
        try:
            res = self.client.wait(
                self.job, timeout=max(0.0, self.deadline - time.monotonic()),
                stall_timeout=self.cfg.stall_timeout,
                on_progress=lambda v, stage, msg: self.on_progress(context, v, stage, msg),
                should_cancel=lambda: self.cancel_requested)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        return self.finish(context, res)

    def on_progress(self, context: Any, value: float, stage: str, msg: Any = None) -> None:
        self.progress_events += 1
        header = getattr(msg, "header", {}) or {}
        p = header.get("progress", {}) if isinstance(header, dict) else {}
        extra = [f"{k} {p[k]:.1f}" if isinstance(p[k], float) else f"{k} {p[k]}"
                 for k in ("step", "train_psnr") if k in p]
        if msg is not None and getattr(msg, "blobs", None):
            try:
                show_preview(next(iter(msg.blobs.values())))
            except (nc.DatasetError, ValueError, RuntimeError):
                pass  # a preview is a nicety; never fail the fit over one
        set_nerf_state(context, progress=max(0.0, min(1.0, value)),
                       stage=" ".join([stage, *extra]).strip(), progress_events=self.progress_events)

    def finish(self, context: Any, res: JobResult) -> set[Any]:
        global _active
        try:
            mid = nc.model_id_of(res.meta)
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
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        finally:
            _active = None if _active is self else _active
            end_client(self.client)
        metric = res.meta.get("train_psnr")
        extra = f", train PSNR {float(metric):.1f} dB" if isinstance(metric, (int, float)) else ""
        set_nerf_state(context, running=False, progress=1.0, stage="done", job_id="",
                       model_id=mid, model_file=saved,
                       status=f"Fitted NeRF {mid[:12]} in {time.monotonic() - self.t0:.0f} s{extra}")
        self.outcome = {"FINISHED"}
        return self.outcome

    def fail(self, context: Any, exc: BackendError) -> set[Any]:
        global _active
        if _active is self:
            _active = None
        end_client(self.client)
        self.error = exc
        nerf_fail_state(context, exc, self.cfg.endpoint)
        self.outcome = {"CANCELLED"}
        return self.outcome


def report_fit(report: Any, task: FitTask) -> None:
    if task.outcome == {"FINISHED"}:
        report({"INFO"}, f"Image2Points: fitted NeRF {task.model_id}")
    elif task.error is not None:
        level = "WARNING" if task.error.code == "CANCELLED" else "ERROR"
        report({level}, f"Image2Points: {error_text(task.error)}")


class IMAGE2POINTS_OT_fit_nerf(ModalTaskOperator, _EndpointProps, bpy.types.Operator):
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
        return _active is None and props.scene_settings(context) is not None

    def begin(self, context: Any) -> set[Any]:
        s = props.scene_settings(context)
        minutes = float(self.minutes) or (0.0 if self.steps else float(s.nerf_minutes))
        try:
            self._task = FitTask.start(context, self.settings(context),
                                       self.dataset or str(s.nerf_dataset), str(s.nerf_field),
                                       minutes, int(self.steps))
        except BackendError as exc:
            nerf_fail_state(context, exc, self.settings(context).endpoint)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        return {"RUNNING_MODAL"}

    def report_task(self, task: FitTask) -> None:
        report_fit(self.report, task)


class IMAGE2POINTS_OT_cancel_nerf(bpy.types.Operator):
    """Cancel the running NeRF fit or capture"""

    bl_idname = "image2points.cancel_nerf"
    bl_label = "Cancel NeRF Job"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: Any) -> bool:
        return _active is not None

    def execute(self, context: Any) -> set[Any]:
        task = _active
        if task is None:
            return {"CANCELLED"}
        task.cancel_requested = True
        set_nerf_state(context, status="Cancelling...", stage="cancelling")
        return {"FINISHED"}


# -- short blocking requests (render, points) ------------------------------------------------------

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
        res = request(context, cfg, "nerf_render", nc.render_request(mid, [pose], intr),
                      cfg.job_timeout)
        blobs = nc.result_images(res.blobs)
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


class IMAGE2POINTS_OT_render_nerf(_EndpointProps, bpy.types.Operator):
    """Render the fitted NeRF at the selected cameras (or the scene camera) into Images"""

    bl_idname = "image2points.render_nerf"
    bl_label = "Render from NeRF"
    bl_options = {"REGISTER", "UNDO"}

    model: StringProperty(name="Model", default="", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        state = props.job_state(context)
        return state is not None and bool(state.nerf_model_id) and _active is None

    def execute(self, context: Any) -> set[Any]:
        cfg = self.settings(context)
        try:
            images = render_nerf(context, cfg, model_id(context, self.model), render_cameras(context))
        except BackendError as exc:
            nerf_fail_state(context, exc, cfg.endpoint)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        names = ", ".join(i.name for i in images)
        set_nerf_state(context, status=f"Rendered {names}", error_code="", error_message="")
        self.report({"INFO"}, f"Image2Points: rendered {names}")
        return {"FINISHED"}


def import_nerf_points(context: Any, cfg: preferences.Settings, mid: str, max_points: int) -> Any:
    res = request(context, cfg, "nerf_points", nc.points_request(mid, max_points), cfg.job_timeout)
    xyz, rgb = points_from_result(res)
    frame = str(res.meta.get("frame", POINTS_FRAME))
    if not nc.is_world_frame(frame):
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


class IMAGE2POINTS_OT_import_nerf_points(_EndpointProps, bpy.types.Operator):
    """Import the fitted NeRF's dense surface points as a point object (Blender world frame)"""

    bl_idname = "image2points.import_nerf_points"
    bl_label = "Import NeRF Points"
    bl_options = {"REGISTER", "UNDO"}

    model: StringProperty(name="Model", default="", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        state = props.job_state(context)
        return state is not None and bool(state.nerf_model_id) and _active is None

    def execute(self, context: Any) -> set[Any]:
        cfg = self.settings(context)
        s = props.scene_settings(context)
        try:
            obj = import_nerf_points(context, cfg, model_id(context, self.model),
                                     int(s.nerf_max_points) if s is not None else 100_000)
        except BackendError as exc:
            nerf_fail_state(context, exc, cfg.endpoint)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        n = int(obj["i2p_point_count"])
        set_nerf_state(context, status=f"Imported {n} NeRF points as '{obj.name}'", error_code="",
                       error_message="")
        self.report({"INFO"}, f"Image2Points: imported {n} points as '{obj.name}'")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (
    IMAGE2POINTS_OT_capture_views,
    IMAGE2POINTS_OT_import_transforms,
    IMAGE2POINTS_OT_fit_nerf,
    IMAGE2POINTS_OT_cancel_nerf,
    IMAGE2POINTS_OT_render_nerf,
    IMAGE2POINTS_OT_import_nerf_points,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    global _active
    _active = None
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

