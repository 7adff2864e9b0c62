"""Talking to the backend: one ZeroMQ context, clients, per-call settings, and the backend's own
operators (check, start/stop a local one, create CURVE keys).

Every long job (reconstruct, NeRF fit, mesh) polls a socket of its own (``new_client``): on a
shared one, two jobs running at once would each throw away the other's progress and heartbeats.
Short blocking requests (check, NeRF render, points) share one cached client per endpoint.
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import FloatProperty, StringProperty

from . import preferences, props
from .core.client import BackendError, Client, endpoint_error

_zmq_ctx: Any = None
_clients: dict[tuple[str, str, str], Client] = {}


def new_client(cfg: preferences.Settings) -> Client:
    """A client of its own (the caller closes it with ``end_client``), after checking the
    endpoint, Blender's online-access policy and the key files."""
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


def end_client(client: Client) -> None:
    """Close a task's own socket, leaving a second for a last cancel to go out (the shared
    context sends it in the background; nothing here blocks)."""
    client.close(linger=1.0)


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


class EndpointProps:
    """Per-call overrides for scripts and tests; empty/0 = use the add-on preferences."""

    endpoint: StringProperty(name="Endpoint", default="",  # type: ignore[valid-type]
                             options={"HIDDEN", "SKIP_SAVE"})
    connect_timeout: FloatProperty(name="Connect Timeout", default=0.0, min=0.0,  # type: ignore[valid-type]
                                   options={"HIDDEN", "SKIP_SAVE"})
    timeout: FloatProperty(name="Job Timeout", default=0.0, min=0.0,  # type: ignore[valid-type]
                           options={"HIDDEN", "SKIP_SAVE"})

    def settings(self, context: Any) -> preferences.Settings:
        return effective_settings(context, self.endpoint, self.connect_timeout, self.timeout)


def error_text(exc: BackendError) -> str:
    return f"[{exc.code}] {exc.message}"


def internal_error(exc: Exception, job: str) -> BackendError:
    return BackendError("INTERNAL", f"unexpected {type(exc).__name__} in the add-on: {exc}", job)


def unreachable_line(endpoint: str, exc: BackendError | None = None) -> str:
    if exc is not None and exc.code == "OFFLINE":
        return exc.message
    return f"Not reachable at {endpoint}. Start it with: image2points serve"


def describe_backend(info: dict[str, Any]) -> str:
    model = info.get("model") or {}
    model_text = str(model.get("name") or model.get("state") or "?") if isinstance(model, dict) else str(model)
    return (f"Connected: {info.get('name', 'backend')} {info.get('version', '?')} on "
            f"{info.get('device', '?')}, model {model_text}, protocol v{info.get('protocol', '?')}")


class IMAGE2POINTS_OT_check_backend(EndpointProps, bpy.types.Operator):
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
            props.set_state(context, backend_ok=False, backend_status=line)
            self.report({"ERROR"}, f"Image2Points: {error_text(exc)}")
            return {"CANCELLED"}
        line = describe_backend(info)
        props.set_state(context, backend_ok=True, backend_status=line)
        props.set_job(context, "job", error_code="", error_message="")
        self.report({"INFO"}, line)
        return {"FINISHED"}


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
        props.set_state(context, backend_status=f"Local backend starting (pid {proc.pid}); press Check")
        self.report({"INFO"}, f"Image2Points: started local backend (pid {proc.pid})")
        return {"FINISHED"}


class IMAGE2POINTS_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend that Blender started"""

    bl_idname = "image2points.stop_backend"
    bl_label = "Stop Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[Any]:
        preferences.stop_local_backend()
        props.set_state(context, backend_ok=False, backend_status="Local backend stopped")
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


CLASSES: tuple[type, ...] = (IMAGE2POINTS_OT_check_backend, IMAGE2POINTS_OT_start_backend,
                             IMAGE2POINTS_OT_stop_backend, IMAGE2POINTS_OT_create_keys)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    close_clients()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
