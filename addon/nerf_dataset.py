"""NeRF datasets: Capture Views renders the selection from posed cameras into images/ plus
transforms_*.json; Import transforms.json makes a dataset's cameras. The file format lives in
core/nerf_capture.py (cameras) and core/transforms.py (transforms.json)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from . import props
from .core import nerf_capture as nc
from .core import transforms as tj
from .core.client import BackendError
from .job_task import active, claim, release
from .modal_task import ModalTaskOperator
from .paths import resolve_dir
from .views import scene_render_restored

CAMERA_COLLECTION = "Image2Points NeRF Cameras"


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
    """views.scene_render_restored plus what a capture also touches."""
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


def capture_failed(context: Any, exc: Exception) -> BackendError:
    """Show why a capture failed (a bad scene or folder) in the NeRF state; the coded error."""
    props.set_job(context, "nerf_job", running=False, error_code="BAD_INPUT", error_message=str(exc),
                  status="Capture failed", stage="failed")
    return BackendError("BAD_INPUT", f"capture failed: {exc}")


class CaptureJob:
    """A capture, one frame per ``step()``: the modal path renders a frame per timer tick (the UI
    stays live and ESC/Cancel works), ``run_blocking()`` renders them all (scripts, background
    mode). Holds the "nerf_job" slot: one NeRF job at a time."""

    slot = "nerf_job"

    def __init__(self, context: Any, out_dir: str, views: int, test_views: int, resolution: int,
                 samples: int):
        from .core.camera import fit_radius

        self.out_dir, self.resolution, self.samples = out_dir, int(resolution), int(samples)
        self.outcome: set[str] = set()
        self.error = ""
        self.summary = ""
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

    def setup(self, context: Any) -> None:
        """Make the camera collection and set the render up (restored by ``close()``)."""
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
        stem = tj.frame_stem(split, i)
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
                    doc = tj.transforms_doc(self.intr, frames, self.aabb,
                                            {"camera_angle_x": self.angle_x})
                    tj.write_json(path, doc)
                elif os.path.lexists(path):
                    os.remove(path)
        finally:
            self.close()

    def close(self) -> None:
        """Restore the scene and give the slot back (safe to call twice)."""
        self._stack.close()
        release(self.slot, self)

    # -- what ModalTaskOperator drives ---------------------------------------------------------
    def start(self, context: Any) -> CaptureJob:
        claim(self.slot, self, "a NeRF job is already running; cancel it first")
        try:
            self.setup(context)
        except (nc.DatasetError, OSError, RuntimeError) as exc:
            self.failed(context, exc)
            raise BackendError("BAD_INPUT", self.error) from None
        props.set_job(context, self.slot, running=True, progress=0.0, stage="capturing", error_code="",
                      error_message="", status=f"Capturing {len(self.plan)} views")
        return self

    def tick(self, context: Any) -> set[str]:
        """Render one frame."""
        if self.outcome:
            return self.outcome
        try:
            if self.cancel_requested:
                self.close()
                props.set_job(context, self.slot, running=False, stage="cancelled",
                              status="Capture cancelled")
                self.outcome = {"CANCELLED"}
                return self.outcome
            if not self.step(context):
                props.set_job(context, self.slot, progress=self.done / len(self.plan),
                              stage=f"view {self.done}/{len(self.plan)}")
                return {"RUNNING_MODAL"}
            self.finish()
        except (nc.DatasetError, OSError, RuntimeError) as exc:
            return self.failed(context, exc)
        s = props.scene_settings(context)
        s.nerf_dataset = self.out_dir
        n_train, n_test = self.counts
        self.summary = (f"Captured {n_train} + {n_test} held-out views in "
                        f"{time.monotonic() - self.t0:.0f} s to {self.out_dir}")
        props.set_job(context, self.slot, running=False, progress=1.0, stage="done",
                      status=self.summary, error_code="", error_message="")
        self.outcome = {"FINISHED"}
        return self.outcome

    def run_blocking(self, context: Any) -> set[str]:
        while (outcome := self.tick(context)) == {"RUNNING_MODAL"}:
            pass
        return outcome

    def failed(self, context: Any, exc: Exception) -> set[str]:
        self.close()
        self.error = capture_failed(context, exc).message
        self.outcome = {"CANCELLED"}
        return self.outcome

    def report(self, report: Any) -> None:
        if self.outcome == {"FINISHED"}:
            report({"INFO"}, f"Image2Points: {self.summary}")
        elif self.error:
            report({"ERROR"}, f"Image2Points: {self.error}")
        else:
            report({"WARNING"}, "Image2Points: capture cancelled (no transforms written)")

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.frames["train"]), len(self.frames["test"])


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
        return props.scene_settings(context) is not None and active("nerf_job") is None

    def make_task(self, context: Any) -> CaptureJob:
        s = props.scene_settings(context)
        try:
            out = bpy.path.abspath(self.directory) if self.directory else resolve_dir(s.nerf_dir)
            return CaptureJob(context, out, int(s.nerf_views), int(s.nerf_test_views),
                              int(s.nerf_resolution), int(s.nerf_samples))
        except (nc.DatasetError, OSError) as exc:
            raise capture_failed(context, exc) from None


# -- import transforms.json ---------------------------------------------------------------------

def import_transforms(context: Any, path: str) -> list[Any]:
    """Create the cameras of a transforms file (sensor 36 mm, fit HORIZONTAL) in a collection;
    sets the scene's resolution to the dataset's and makes the first camera active."""
    ds = tj.read_transforms(path, need_images=False)
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


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_capture_views, IMAGE2POINTS_OT_import_transforms)
