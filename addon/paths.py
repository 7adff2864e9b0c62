"""Where output goes: never the add-on folder; '//' is next to the .blend (temp for an unsaved one)."""

from __future__ import annotations

import os
import re
import tempfile

import bpy


def resolve_dir(path: str, sub: str = "") -> str:
    """A folder for output: '//' is next to the .blend, or the temp folder for an unsaved file."""
    if path.startswith("//") and not bpy.data.filepath:
        path = os.path.join(tempfile.gettempdir(), "image2points", path[2:])
    out = os.path.join(bpy.path.abspath(path or "//"), sub) if sub else bpy.path.abspath(path)
    os.makedirs(out, exist_ok=True)
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "points"
