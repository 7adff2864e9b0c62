"""Build the Blender extension zips (one per platform), with pyzmq wheels, and validate them.

    .venv/bin/python -m image2points.addon.build                 # -> dist/image2points-<version>-<platform>.zip
    .venv/bin/python -m image2points.addon.build --out DIR --blender /path/to/blender

Steps: download the cp311 pyzmq wheels (same version as installed here) for Windows x64, macOS
(universal2: arm64 + x64) and Linux x64 into a cache (~/.cache/image2points/wheels); stage addon/
(no tests, caches or this script) + blender_manifest.toml with ``wheels``/``platforms`` added +
LICENSE in a temporary folder (so a read-only checkout builds too); run Blender's own extension
builder with ``--split-platforms``, then ``validate`` on every zip.
The builder is ``blender --command extension`` when --blender is given, otherwise the same
script shipped inside the bpy wheel (plain Python, no Blender start-up).

A dev tool: it is excluded from the extension itself and never imported by Blender.
"""

import argparse
import glob
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON = os.path.join(ROOT, "addon")
DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                             "image2points", "wheels")

# Blender platform -> the pip --platform tag of the cp311 pyzmq wheel that serves it.
PLATFORM_TAGS = {
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_10_15_universal2",
    "macos-x64": "macosx_10_15_universal2",
    "linux-x64": "manylinux_2_28_x86_64",
}
EXCLUDE = {"build.py", "__pycache__"}


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def wheel_for(cache: str, version: str, tag: str) -> str | None:
    arch = tag.split("_", 1)[-1] if tag.startswith("manylinux") else tag
    hits = [p for p in glob.glob(os.path.join(cache, f"pyzmq-{version}-cp311-cp311-*.whl"))
            if (tag.startswith("manylinux") and "manylinux" in p and p.endswith(f"{arch}.whl"))
            or (not tag.startswith("manylinux") and p.endswith(f"{tag}.whl"))]
    return sorted(hits)[0] if hits else None


def fetch_wheels(cache: str, version: str, platforms: list[str]) -> dict[str, str]:
    """Blender platform -> wheel path, downloading what the cache lacks. Missing ones are skipped
    (and said loudly): the build then covers fewer platforms."""
    os.makedirs(cache, exist_ok=True)
    found: dict[str, str] = {}
    for platform in platforms:
        tag = PLATFORM_TAGS[platform]
        path = wheel_for(cache, version, tag)
        if path is None:
            log(f"downloading pyzmq {version} for {platform} ({tag})")
            res = subprocess.run(
                [sys.executable, "-m", "pip", "download", f"pyzmq=={version}", "--only-binary=:all:",
                 "--python-version", "3.11", "--platform", tag, "--no-deps", "-d", cache, "-q"],
                capture_output=True, text=True)
            path = wheel_for(cache, version, tag)
            if path is None:
                log(f"WARNING: NO pyzmq WHEEL FOR {platform.upper()} ({tag}); that platform is "
                    f"LEFT OUT of this build.\n{res.stderr.strip()[-600:]}")
                continue
        found[platform] = path
    return found


def stage(stage_dir: str, wheels: dict[str, str]) -> None:
    """addon/ + manifest (+ wheels, platforms) into a clean folder."""
    if os.path.exists(stage_dir):
        shutil.rmtree(stage_dir)
    shutil.copytree(ADDON, stage_dir, ignore=lambda d, names: [
        n for n in names if n in EXCLUDE or n.endswith((".pyc", ".pyo")) or n.startswith(".")
        or n == "tests"])
    wheel_dir = os.path.join(stage_dir, "wheels")
    os.makedirs(wheel_dir)
    names = []
    for path in sorted(set(wheels.values())):
        shutil.copy2(path, wheel_dir)
        names.append(f"./wheels/{os.path.basename(path)}")
    with open(os.path.join(ROOT, "blender_manifest.toml"), encoding="utf-8") as f:
        manifest = f.read()
    if any(line.split("=")[0].strip() in {"wheels", "platforms"} for line in manifest.splitlines()):
        raise SystemExit("error: blender_manifest.toml already sets wheels/platforms; the build adds "
                         "them, so remove them there")
    quoted = ", ".join(f'"{p}"' for p in sorted(wheels))
    wheel_lines = "".join(f'  "{n}",\n' for n in names)
    extra = f"platforms = [{quoted}]\nwheels = [\n{wheel_lines}]\n\n"
    lines = manifest.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    manifest = "".join(lines[:first_table]) + extra + "".join(lines[first_table:])
    with open(os.path.join(stage_dir, "blender_manifest.toml"), "w", encoding="utf-8") as f:
        f.write(manifest)
    if not os.path.isfile(os.path.join(ROOT, "LICENSE")):
        raise SystemExit("error: LICENSE is missing from the checkout; the extension must ship it")
    shutil.copy2(os.path.join(ROOT, "LICENSE"), stage_dir)


def builder_command(blender: str | None) -> list[str]:
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: no Blender builder: pass --blender /path/to/blender or "
                         "install the bpy wheel (pip install bpy==4.2.23)")
    base = list(spec.submodule_search_locations)[0]
    hits = glob.glob(os.path.join(base, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if not hits:
        raise SystemExit(f"error: blender_ext.py not found under {base}")
    return [sys.executable, hits[0]]


def build(out_dir: str, cache: str, blender: str | None = None,
          platforms: list[str] | None = None) -> list[str]:
    version = importlib.metadata.version("pyzmq")
    wheels = fetch_wheels(cache, version, platforms or list(PLATFORM_TAGS))
    if not wheels:
        raise SystemExit("error: no pyzmq wheel could be found or downloaded")
    cmd = builder_command(blender)
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "image2points-*.zip")):
        os.remove(old)
    with tempfile.TemporaryDirectory(prefix="image2points-build-") as tmp:
        stage_dir = os.path.join(tmp, "image2points")  # the folder name is the extension's id
        stage(stage_dir, wheels)
        log(f"building from {stage_dir}")
        subprocess.run([*cmd, "build", "--source-dir", stage_dir, "--output-dir", out_dir,
                        "--split-platforms"], check=True)
        zips = sorted(glob.glob(os.path.join(out_dir, "image2points-*.zip")))
        for path in [stage_dir, *zips]:
            subprocess.run([*cmd, "validate", path], check=True, capture_output=True, text=True)
            log(f"valid: {'staged extension' if path == stage_dir else path}")
    return zips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m image2points.addon.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output folder (default dist/)")
    p.add_argument("--wheels-cache", default=DEFAULT_CACHE,
                   help=f"where downloaded pyzmq wheels are kept (default {DEFAULT_CACHE})")
    p.add_argument("--blender", default=None, help="use this Blender's 'extension' command")
    p.add_argument("--platforms", nargs="*", choices=sorted(PLATFORM_TAGS), default=None)
    args = p.parse_args(argv)
    try:
        zips = build(os.path.abspath(args.out), os.path.abspath(args.wheels_cache), args.blender,
                     args.platforms)
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(map(str, exc.cmd))} failed:\n{exc.stdout or ''}{exc.stderr or ''}",
              file=sys.stderr)
        return 1
    for z in zips:
        print(z)
    return 0


if __name__ == "__main__":
    sys.exit(main())
