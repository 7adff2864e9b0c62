"""Which objects an action works on, and leaving the selection as Blender's own importers do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def is_point_object(obj: Any) -> bool:
    return obj is not None and getattr(obj, "type", "") == "MESH" and "i2p_point_count" in obj


def target_objects(context: Any) -> list[Any]:
    """Selected Image2Points point objects, the active one first."""
    objs = [o for o in (getattr(context, "selected_objects", None) or []) if is_point_object(o)]
    active = getattr(context, "active_object", None)
    if is_point_object(active) and active not in objs:
        objs.insert(0, active)
    return objs


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


@contextmanager
def only_selected(context: Any, obj: Any) -> Iterator[None]:
    """``obj`` alone selected and active (for Blender's exporters), the selection restored after."""
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
