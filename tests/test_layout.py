"""The picture of the imports is the design: glue -> core <- backend, and no circles.

Built with the standard library's ``ast`` from the source files, so it sees every import, also
those inside functions (a lazy import still ties two modules together).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"addon": "image2points.addon", "backend": "image2points.backend",
            "bench": "image2points.bench"}


def _modules() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the three packages."""
    mods = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([name, *parts])] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (a package's ``from . import x`` counts as x)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from pkg import name` may name a function, not a module
                t = t.rpartition(".")[0]
            if t and t != name and not (t in PACKAGES.values() or t == "image2points"):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _external(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def test_no_module_imports_the_source_folders_by_their_bare_names():
    """Installed, there is no top-level ``addon``, ``backend`` or ``bench``: code that imports them
    (or names them to importlib) works only from a checkout's root."""
    bare = []
    for name, path in _modules().items():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                mods = [node.value] if node.value.split(".")[0] in PACKAGES and "." in node.value \
                    and " " not in node.value and not node.value.endswith((".py", ".log")) else []
            bare += [(name, m) for m in mods if m.split(".")[0] in PACKAGES]
    # the one exception: ``blender -P addon/batch.py`` puts the checkout on sys.path itself
    assert set(bare) <= {("image2points.addon.batch", "addon.batch")}, bare


def test_no_import_cycles():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == [], f"import circles: {cycles}"


def test_the_core_stands_alone():
    """No bpy, no torch in the core; zmq only in its client; nothing from the glue or backend."""
    g = graph()
    mods = _modules()
    core = {m for m in g if m.startswith("image2points.addon.core")}
    assert {"image2points.addon.core.protocol", "image2points.addon.core.client"} <= core
    for m in core:
        ext = _external(mods[m])
        assert not ext & {"bpy", "mathutils", "torch", "bmesh"}, (m, ext)
        if not m.endswith(".client"):
            assert "zmq" not in ext, f"{m} imports zmq; only the core's client may"
        outside = {d for d in g[m] if not d.startswith("image2points.addon.core")}
        assert not outside, f"{m} imports {outside}"


def test_backend_imports_only_the_core_of_the_addon():
    g = graph()
    for m, deps in g.items():
        if m.startswith("image2points.backend"):
            glue = {d for d in deps if d.startswith("image2points.addon")
                    and not d.startswith("image2points.addon.core")}
            assert not glue, f"{m} imports Blender glue {glue}"


def test_the_addon_never_imports_the_backend():
    g = graph()
    for m, deps in g.items():
        if m.startswith("image2points.addon"):
            assert not {d for d in deps if d.startswith(("image2points.backend", "image2points.bench"))}, m


def test_every_package_folder_is_installed_under_the_project_name():
    """pyproject lists packages by hand (package-dir mapping); a new folder must be added there."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join([PACKAGES[p.parts[0]], *p.parts[1:]])
             for folder in PACKAGES for p in
             (i.parent.relative_to(ROOT) for i in (ROOT / folder).rglob("__init__.py"))}
    assert found == listed
    assert cfg["package-dir"] == {v: k for k, v in PACKAGES.items()}
