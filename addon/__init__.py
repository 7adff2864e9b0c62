"""Image2Points Blender extension: one image in, a coloured point cloud out.

Importable without bpy (the backend imports ``addon.core``), so bpy and every
Blender-facing module is imported inside register()/unregister() only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Blender-facing modules, registered in this order and unregistered in reverse: a module's own
# register()/unregister() where it has more to do, else just its CLASSES.
_MODULE_NAMES = ("props", "preferences", "connection", "reconstruct", "views", "ply_export", "assets",
                 "nerf_dataset", "nerf_fit", "nerf_render", "ui", "mesh", "mesh_export")
_modules: list[ModuleType] = []


def register() -> None:
    import bpy

    _modules.clear()
    for name in _MODULE_NAMES:
        mod = importlib.import_module(f"{__name__}.{name}")
        if hasattr(mod, "register"):
            mod.register()
        else:
            for cls in mod.CLASSES:
                bpy.utils.register_class(cls)
        _modules.append(mod)


def unregister() -> None:
    import bpy

    for mod in reversed(_modules):
        if hasattr(mod, "unregister"):
            mod.unregister()
        else:
            for cls in reversed(mod.CLASSES):
                bpy.utils.unregister_class(cls)
    _modules.clear()
