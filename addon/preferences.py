"""Add-on preferences: where the backend is, how long to wait, CURVE keys, an optional local backend.

Preferences live in Blender's userpref.blend, never in a scene .blend. CURVE keys are files
(ZeroMQ certificate format) under the extension's user directory; only their paths are stored.
The optional local backend is a subprocess (never a thread), stopped on unregister and at exit.
"""


import atexit
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from .client import DEFAULT_ENDPOINT, CurveKeys

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
    strict_cut: bool = False


class IMAGE2POINTS_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = base_package

    endpoint: StringProperty(  # type: ignore[valid-type]
        name="Backend Endpoint", default=DEFAULT_ENDPOINT,
        description="ZeroMQ address of the backend, e.g. tcp://127.0.0.1:5555")
    connect_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Connect Timeout", default=3.0, min=0.1, max=120.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for a connection before reporting 'not reachable'")
    job_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Job Timeout", default=300.0, min=1.0, max=86400.0, unit="TIME_ABSOLUTE",
        description="Longest a reconstruction may take before it is cancelled")
    stall_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Silence Timeout", default=10.0, min=2.0, max=3600.0, unit="TIME_ABSOLUTE",
        description="A running job whose backend says nothing for this long is treated as lost")
    server_key_file: StringProperty(  # type: ignore[valid-type]
        name="Server Public Key", subtype="FILE_PATH", default="",
        description="CurveZMQ: the backend's public key file (.key). Empty = no encryption")
    client_key_file: StringProperty(  # type: ignore[valid-type]
        name="Client Key Pair", subtype="FILE_PATH", default="",
        description="CurveZMQ: this Blender's key pair file (.key_secret)")
    local_command: StringProperty(  # type: ignore[valid-type]
        name="Local Backend Command", default="image2points serve",
        description="Command line that starts a backend on this machine (run as a subprocess)")
    strict_cut: BoolProperty(  # type: ignore[valid-type]
        name="Refuse Doubtful Cut-outs", default=False,
        description="Fail a reconstruction whose automatic cut-out looks wrong, instead of warning")
    show_advanced: BoolProperty(name="Advanced", default=False)  # type: ignore[valid-type]

    def draw(self, context: Any) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "endpoint")
        col.prop(self, "connect_timeout")
        col.prop(self, "job_timeout")
        col.prop(self, "stall_timeout")
        col.prop(self, "strict_cut")
        ok, why = endpoint_allowed(self.endpoint)
        if not ok:
            col.label(text=why, icon="ERROR")
        box = layout.box()
        box.label(text="Encryption (CurveZMQ, for backends on other machines)")
        box.prop(self, "server_key_file")
        box.prop(self, "client_key_file")
        box.operator("image2points.create_keys", icon="KEYINGSET")
        box = layout.box()
        box.label(text="Local backend")
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
    return Settings(str(p.endpoint), float(p.connect_timeout), float(p.job_timeout),
                    float(p.stall_timeout), str(p.server_key_file), str(p.client_key_file),
                    str(p.local_command), bool(getattr(p, "strict_cut", False)))


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def endpoint_allowed(endpoint: str) -> tuple[bool, str]:
    """Blender's online-access policy: loopback always, anything else only with online access."""
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


def start_local_backend(command: str) -> subprocess.Popen[bytes]:
    """Launch ``command`` (shell-free) as a child process; output goes to a log file."""
    global _backend_proc, _backend_log
    if _backend_proc is not None and _backend_proc.poll() is None:
        return _backend_proc
    argv = shlex.split(command, posix=os.name != "nt")
    if not argv:
        raise ValueError("the local backend command is empty")
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


CLASSES: tuple[type, ...] = (IMAGE2POINTS_AP_preferences,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    atexit.register(stop_local_backend)  # Blender 4.2 has no quit handler; atexit runs at exit


def unregister() -> None:
    stop_local_backend()
    atexit.unregister(stop_local_backend)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
