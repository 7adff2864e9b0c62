"""Image2Points Blender extension: one image in, a coloured point cloud out.

Importable without bpy (the backend imports ``addon.core``), so bpy and every
Blender-facing module is imported inside register()/unregister() only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Blender-facing modules, registered in this order and unregistered in reverse.
_MODULE_NAMES = ("props", "preferences", "connection", "reconstruct", "views", "ply_export", "assets",
                 "nerf_dataset", "nerf_fit", "nerf_render", "ui", "mesh")
_modules: list[ModuleType] = []


def register() -> None:
    _modules.clear()
    for name in _MODULE_NAMES:
        mod = importlib.import_module(f"{__name__}.{name}")
        mod.register()
        _modules.append(mod)


def unregister() -> None:
    for mod in reversed(_modules):
        mod.unregister()
    _modules.clear()
