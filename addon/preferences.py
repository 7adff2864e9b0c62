"""Add-on preferences: where the backend is, how long to wait, CURVE keys, an optional local backend.

Preferences live in Blender's userpref.blend, never in a scene .blend. CURVE keys are files
(ZeroMQ certificate format) under the extension's user directory; only their paths are stored.
The optional local backend is a subprocess (never a thread), stopped on unregister and at exit;
Install Backend (backend_install.py) puts it in a private virtual environment in the extension's
user data folder, and Start Local Backend then runs it by full path (no PATH needed).
"""


import atexit
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import backend_install, props
from .core.client import DEFAULT_ENDPOINT, CurveKeys, endpoint_error
from .modal_task import ModalTaskOperator

# The add-on package: "addon" in tests, "bl_ext.<repo>.image2points" when installed.
base_package = __package__ or __name__.rpartition(".")[0]

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"}


@dataclass
class Settings:
    """What the operators need from the preferences (defaults where the add-on is not enabled
    as an extension, e.g. when tests register the package directly)."""

    endpoint: str = DEFAULT_ENDPOINT
    connect_timeout: float = 3.0
    job_timeout: float = 300.0
    stall_timeout: float = 10.0
    server_key_file: str = ""
    client_key_file: str = ""
    local_command: str = "image2points serve"
    backend_package: str = "image2points"
    backend_torch: str = "CPU"
    backend_pip_args: str = ""
    strict_cut: bool = False


class IMAGE2POINTS_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = base_package

    endpoint: StringProperty(  # type: ignore[valid-type]
        name="Backend Endpoint", default=DEFAULT_ENDPOINT,
        description="ZeroMQ address of the backend, tcp://HOST:PORT (port 1-65535), e.g. "
                    "tcp://127.0.0.1:5555 for a backend on this computer")
    connect_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Connect Timeout", default=3.0, min=0.1, max=120.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for the backend to answer before reporting 'not reachable'")
    job_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Job Timeout", default=300.0, min=1.0, max=86400.0, unit="TIME_ABSOLUTE",
        description="Longest a reconstruction may take, in seconds, before it is cancelled")
    stall_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Silence Timeout", default=10.0, min=2.0, max=3600.0, unit="TIME_ABSOLUTE",
        description="Seconds a running job's backend may stay silent before the job counts as lost "
                    "(it sends a heartbeat every second)")
    server_key_file: StringProperty(  # type: ignore[valid-type]
        name="Server Public Key", subtype="FILE_PATH", default="",
        description="CurveZMQ: the backend's public key file (.key); empty = no encryption")
    client_key_file: StringProperty(  # type: ignore[valid-type]
        name="Client Key Pair", subtype="FILE_PATH", default="",
        description="CurveZMQ: this Blender's key pair file (.key_secret); empty = no encryption")
    local_command: StringProperty(  # type: ignore[valid-type]
        name="Local Backend Command", default="image2points serve",
        description="Command line that starts a backend on this computer (run as a subprocess); a "
                    "bare 'image2points' means the one Install Backend made, else the one on PATH")
    backend_package: StringProperty(  # type: ignore[valid-type]
        name="Backend Package", default="image2points",
        description="What Install Backend gives to pip: the package name (image2points, from the "
                    "package index), a wheel or source archive file, or a git URL")
    backend_torch: EnumProperty(  # type: ignore[valid-type]
        name="PyTorch", items=backend_install.TORCH_CHOICES, default="CPU",
        description="Which PyTorch build Install Backend downloads")
    backend_pip_args: StringProperty(  # type: ignore[valid-type]
        name="Extra pip Options", default="",
        description="Added to every pip command of Install Backend, e.g. --no-index --find-links "
                    "/path/to/wheels for an offline install")
    strict_cut: BoolProperty(  # type: ignore[valid-type]
        name="Refuse Doubtful Cut-outs", default=False,
        description="Fail a reconstruction whose automatic cut-out looks wrong, instead of warning")
    show_advanced: BoolProperty(  # type: ignore[valid-type]
        name="Advanced", default=False,
        description="Show the timeouts, the CurveZMQ encryption settings and extra pip options")

    def draw(self, context: Any) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "endpoint")
        endpoint = str(self.endpoint).strip()
        why = endpoint_error(endpoint) or endpoint_allowed(endpoint)[1]
        if why:
            col.label(text=why, icon="ERROR")
        col.prop(self, "strict_cut")
        layout.prop(self, "show_advanced", icon="TRIA_DOWN" if self.show_advanced else "TRIA_RIGHT",
                    emboss=False)
        if self.show_advanced:
            col = layout.column()
            col.prop(self, "connect_timeout")
            col.prop(self, "job_timeout")
            col.prop(self, "stall_timeout")
            box = layout.box()
            box.label(text="Encryption (CurveZMQ, for backends on other machines)")
            box.prop(self, "server_key_file")
            box.prop(self, "client_key_file")
            box.operator("image2points.create_keys", icon="KEYINGSET")
        box = layout.box()
        box.label(text="Backend on this computer")
        col = box.column()
        col.prop(self, "backend_package")
        col.row().prop(self, "backend_torch", expand=True)
        if self.show_advanced:
            col.prop(self, "backend_pip_args")
        task = _install
        row = box.row()
        if task is not None and not task.outcome:
            row.progress(factor=task.progress, type="BAR", text=task.status[:80]) \
                if hasattr(row, "progress") else row.label(text=task.status)
            row.operator("image2points.cancel_install", text="", icon="CANCEL")
        else:
            row.operator("image2points.install_backend", icon="IMPORT")
        for line in install_status_lines():
            box.label(text=line[:120])
        box.prop(self, "local_command")
        row = box.row()
        row.operator("image2points.start_backend", icon="PLAY")
        row.operator("image2points.stop_backend", icon="PAUSE")
        box.label(text=local_backend_status())


def settings(context: Any = None) -> Settings:
    """The preferences as a plain object (defaults when the add-on is not registered as one)."""
    ctx: Any = context or bpy.context
    try:
        addon = ctx.preferences.addons.get(base_package)
        p = addon.preferences if addon is not None else None
    except AttributeError:
        p = None
    if p is None:
        return Settings()
    return Settings(str(p.endpoint).strip(), float(p.connect_timeout), float(p.job_timeout),
                    float(p.stall_timeout), str(p.server_key_file), str(p.client_key_file),
                    str(p.local_command), str(p.backend_package), str(p.backend_torch),
                    str(p.backend_pip_args), bool(getattr(p, "strict_cut", False)))


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def endpoint_allowed(endpoint: str) -> tuple[bool, str]:
    """Blender's online-access policy: loopback always, anything else only with online access."""
    endpoint = endpoint.strip()
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        return False, f"'{endpoint}' is not a ZeroMQ endpoint (expected tcp://HOST:PORT)"
    if is_loopback(endpoint) or bool(getattr(bpy.app, "online_access", True)):
        return True, ""
    if getattr(bpy.app, "online_access_override", False):
        how = "Blender was started with --offline-mode; restart it without that flag"
    else:
        how = "turn on Edit > Preferences > System > Network > Allow Online Access"
    return False, (f"Online access is off, so Image2Points will not connect to {endpoint} "
                   f"(not this computer): {how}, or use a backend on 127.0.0.1")


def keys_dir(create: bool = True) -> str:
    """Where key files belong: the extension's user directory (kept across upgrades)."""
    try:
        return str(bpy.utils.extension_path_user(base_package, path="keys", create=create))
    except (ValueError, RuntimeError):  # not installed as an extension (tests, legacy add-on)
        path = os.path.join(tempfile.gettempdir(), "image2points-keys")
        if create:
            os.makedirs(path, exist_ok=True)
        return path


def load_curve(cfg: Settings) -> CurveKeys | None:
    """CURVE keys from files, or None when not configured. Raises ValueError with a clear text."""
    if not cfg.server_key_file and not cfg.client_key_file:
        return None
    if not (cfg.server_key_file and cfg.client_key_file):
        raise ValueError("CurveZMQ needs both the server public key and the client key pair files")
    return CurveKeys.from_files(bpy.path.abspath(cfg.server_key_file),
                                bpy.path.abspath(cfg.client_key_file))


# -- the optional local backend subprocess -----------------------------------------------------

_backend_proc: subprocess.Popen[bytes] | None = None
_backend_log: str = ""


def resolve_command(argv: list[str], installed_exe: str = "") -> list[str]:
    """A bare 'image2points' is the one Install Backend made (by full path), else the one on PATH;
    a command that cannot be found is a ValueError that says what to do."""
    exe = argv[0]
    if exe == "image2points" and installed_exe and os.path.isfile(installed_exe):
        return [installed_exe, *argv[1:]]
    if os.path.dirname(exe):
        if not os.path.isfile(exe):
            raise ValueError(f"'{exe}' does not exist: press Install Backend, or fix Local Backend "
                             "Command")
        return argv
    if shutil.which(exe) is None:
        raise ValueError(f"'{exe}' was not found (Blender's PATH does not reach it): press Install "
                         "Backend above, or give Local Backend Command its full path, e.g. "
                         "/path/to/venv/bin/image2points serve")
    return argv


def start_local_backend(command: str, installed_exe: str = "") -> subprocess.Popen[bytes]:
    """Launch ``command`` (shell-free) as a child process; output goes to a log file."""
    global _backend_proc, _backend_log
    if _backend_proc is not None and _backend_proc.poll() is None:
        return _backend_proc
    argv = shlex.split(command, posix=os.name != "nt")
    if not argv:
        raise ValueError("the local backend command is empty")
    argv = resolve_command(argv, installed_exe)
    log_dir = os.path.join(tempfile.gettempdir(), "image2points")
    os.makedirs(log_dir, exist_ok=True)
    _backend_log = os.path.join(log_dir, "backend.log")
    with open(_backend_log, "ab") as log:
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if sys.platform == "win32" else 0
        _backend_proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, creationflags=flags)
    return _backend_proc


def stop_local_backend(timeout: float = 5.0) -> None:
    """Terminate the backend we started (if any): SIGTERM, then kill after ``timeout``."""
    global _backend_proc
    proc, _backend_proc = _backend_proc, None
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def local_backend_status() -> str:
    proc = _backend_proc
    if proc is None:
        return "Local backend: not started by Blender"
    code = proc.poll()
    if code is None:
        return f"Local backend: running (pid {proc.pid}), log {_backend_log}"
    return f"Local backend: exited with code {code}, see {_backend_log}"


# -- Install Backend: a private virtual environment in the extension's user data folder --------

_install: backend_install.InstallTask | None = None
_installed: dict[str, str] = {"exe": "", "error": ""}  # what draw() shows (draw does no I/O)


def backend_dir(create: bool = True) -> str:
    """The extension's user data folder for the backend (kept across upgrades, never the add-on
    folder); Blender's user datafiles folder where the add-on is not installed as an extension."""
    try:
        return str(bpy.utils.extension_path_user(base_package, path="backend", create=create))
    except (ValueError, RuntimeError):
        return str(bpy.utils.user_resource("DATAFILES", path=os.path.join("image2points", "backend"),
                                           create=create))


def venv_dir(create: bool = True) -> str:
    return os.path.join(backend_dir(create), "venv")


def installed_exe() -> str:
    """The Install Backend environment's image2points, '' when there is none (file check)."""
    exe = backend_install.venv_exe(venv_dir(create=False))
    _installed["exe"] = exe if os.path.isfile(exe) else ""
    return _installed["exe"]


def install_status_lines() -> list[str]:
    """What the preferences show about the installed backend (from memory only)."""
    task = _install
    if task is not None and task.error:
        return [task.error[i:i + 110] for i in range(0, min(len(task.error), 660), 110)]
    if task is not None and task.outcome == {"FINISHED"}:
        return [task.status, f"Installed: {_installed['exe']}"]
    if _installed["exe"]:
        return [f"Installed: {_installed['exe']}"]
    return ["Not installed: Install Backend makes a private Python environment for it "
            "(several hundred MB)"]


def install_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"  # the user's own site-packages must not leak into the backend
    env.pop("PYTHONHOME", None)
    return env


def new_install_task(cfg: Settings) -> backend_install.InstallTask:
    venv = venv_dir()
    steps = backend_install.plan(sys.executable, venv, cfg.backend_package, cfg.backend_torch,
                                 shlex.split(cfg.backend_pip_args, posix=os.name != "nt"))
    return backend_install.InstallTask(steps, os.path.join(backend_dir(), "install.log"),
                                       env=install_env())


class IMAGE2POINTS_OT_install_backend(ModalTaskOperator, bpy.types.Operator):
    """Make a private Python environment in the extension's user folder and pip-install the backend and PyTorch into it (progress shows here; Esc cancels)"""

    bl_idname = "image2points.install_backend"
    bl_label = "Install Backend"
    bl_options = {"REGISTER"}
    timer_interval = 0.5

    @classmethod
    def poll(cls, context: Any) -> bool:
        return _install is None or bool(_install.outcome)

    def begin(self, context: Any) -> set[Any]:
        global _install
        cfg = settings(context)
        if not bool(getattr(bpy.app, "online_access", True)) and "--no-index" not in cfg.backend_pip_args:
            self.report({"ERROR"}, "Image2Points: Install Backend downloads from the internet, and "
                        "online access is off: turn on Edit > Preferences > System > Network > Allow "
                        "Online Access, or install a local wheel with Extra pip Options --no-index")
            return {"CANCELLED"}
        try:
            task = new_install_task(cfg)
            task.begin()
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Image2Points: Install Backend could not start: {exc}")
            return {"CANCELLED"}
        _install = self._task = task
        props.redraw(context)
        return {"RUNNING_MODAL"}

    def tick(self, context: Any) -> set[Any]:
        outcome = super().tick(context)
        props.redraw(context)
        return outcome

    def report_task(self, task: Any) -> None:
        installed_exe()
        if task.outcome == {"FINISHED"}:
            self.report({"INFO"}, f"Image2Points: {task.status}: {_installed['exe']}")
        else:
            self.report({"WARNING" if task.cancel_requested else "ERROR"}, task.error)


class IMAGE2POINTS_OT_cancel_install(bpy.types.Operator):
    """Stop Install Backend (the environment stays as far as it got; installing again goes on from there)"""

    bl_idname = "image2points.cancel_install"
    bl_label = "Cancel Install"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        if _install is not None:
            _install.cancel_requested = True
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (IMAGE2POINTS_AP_preferences, IMAGE2POINTS_OT_install_backend,
                             IMAGE2POINTS_OT_cancel_install)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    atexit.register(stop_local_backend)  # Blender 4.2 has no quit handler; atexit runs at exit
    try:
        installed_exe()
    except (OSError, ValueError, RuntimeError):
        pass


def unregister() -> None:
    global _install
    stop_local_backend()
    atexit.unregister(stop_local_backend)
    if _install is not None:
        _install.stop()
        _install = None
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
