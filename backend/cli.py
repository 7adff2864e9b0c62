"""``image2points`` command line: serve | ping | reconstruct | keys | make-data | train | eval | pipeline |
nerf | bench.

Sub-commands that pull in torch live in their own modules and are imported only when named, so
``image2points ping`` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable

from . import __version__, threads
from .limits import Limits

# sub-command -> module defining register(sub), relative to this package (imported lazily)
BUILTINS = ("serve", "ping", "reconstruct", "keys")
PLUGINS = {
    "make-data": ".data.make",
    "train": ".train",
    "eval": ".evaluate",
    "eval-mask": ".eval_mask",
    "pipeline": ".pipeline",
    "nerf": ".nerf.cli",
    "bench": "..bench.__main__",
    "broker": ".broker",
}


def cmd_serve(args: argparse.Namespace) -> int:
    threads.quiet_openmp()
    from .frontend import ServerConfig
    from .logsafe import setup_logging
    from .server import serve

    setup_logging(args.log_level, args.log_json)
    limits = Limits(max_queue=args.max_queue, max_batch=args.max_batch,
                    batch_wait_s=args.batch_wait_ms / 1000.0, max_pixels=args.max_image_px ** 2,
                    max_inflight_per_client=args.max_inflight, max_points=args.max_points,
                    max_message_bytes=args.max_message_mb << 20,
                    max_image_bytes=args.max_image_mb << 20)
    n_threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 2) // 2)
    cfg = ServerConfig(host=args.host, port=args.port, device=args.device, threads=n_threads,
                       checkpoint=args.checkpoint, preload=not args.lazy, insecure=args.insecure,
                       curve_secret=args.curve_secret, curve_clients=args.curve_clients,
                       connect_broker=args.connect_broker, broker_key=args.broker_key,
                       limits=limits)
    return serve(cfg, ready_file=args.ready_file)


def cmd_ping(args: argparse.Namespace) -> int:
    from image2points.addon.core.client import BackendError, Client, CurveKeys

    try:
        curve = None
        if args.server_key or args.client_key:
            if not (args.server_key and args.client_key):
                raise ValueError("CurveZMQ needs both --server-key and --client-key")
            curve = CurveKeys.from_files(args.server_key, args.client_key)
    except ValueError as exc:
        print(f"image2points ping: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(args.endpoint, connect_timeout=args.timeout, curve=curve) as c:
            info = c.hello(timeout=args.timeout)
    except BackendError as exc:
        print(f"image2points ping: {exc.message}", file=sys.stderr)
        return 2
    model = info.get("model", {})
    label = model.get("name") or model.get("path") or "none"
    print(f"image2points {info.get('version')} protocol v{info.get('protocol')} at {args.endpoint}: "
          f"device {info.get('device')}, model {label} ({model.get('state')}), "
          f"queue {info.get('queue')}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    threads.quiet_openmp()
    import numpy as np

    from .images import decode_image
    from .ops import JobError
    from .ply import write_ply
    from .reconstruct_op import FRAME, cut_out

    if args.mesh and not args.mesh.lower().endswith((".glb", ".ply", ".obj")):
        print(f"image2points reconstruct: --mesh {args.mesh}: use a .glb, .ply or .obj name",
              file=sys.stderr)
        return 2
    try:
        with open(args.image, "rb") as f:
            img = decode_image(f.read(), name=args.image)
        mask = None
        if args.mask:
            with open(args.mask, "rb") as f:
                mask = f.read()
        alpha, source, warns = cut_out(img, mask, args.strict)
        for w in warns:
            print(f"image2points reconstruct: warning {w['code']}: {args.image}: {w['message']}",
                  file=sys.stderr)
        if args.save_mask:
            from PIL import Image

            Image.fromarray(np.round(alpha * 255).astype(np.uint8)).save(args.save_mask)
            print(f"wrote the mask ({source}) to {args.save_mask}")
        from .model.reconstruct import Reconstructor

        model = Reconstructor.load(args.checkpoint, device=args.device)
    except JobError as exc:
        print(f"image2points reconstruct: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"image2points reconstruct: {exc}", file=sys.stderr)
        return 2
    try:
        cloud = model.reconstruct([img], density=args.density, alphas=[alpha])[0]
    except ValueError as exc:  # preprocess: blank, fully transparent or 1x1 image
        print(f"image2points reconstruct: {args.image}: {exc}", file=sys.stderr)
        return 2
    folder = os.path.dirname(os.path.abspath(args.output))
    try:  # a user naming out/new/x.ply expects the folder to be made
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        print(f"image2points reconstruct: cannot create folder {folder}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    try:
        write_ply(args.output, cloud.xyz, cloud.rgb, comment=f"Image2Points frame={FRAME}")
    except OSError as exc:
        print(f"image2points reconstruct: cannot write {args.output}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"wrote {len(cloud.xyz)} points to {args.output} (frame {FRAME})")
    if args.mesh is not None:
        return write_cli_mesh(args, cloud.xyz, cloud.rgb)
    return 0


def write_cli_mesh(args: argparse.Namespace, xyz, rgb) -> int:  # type: ignore[no-untyped-def]
    """``--mesh [PATH]``: the cloud as a watertight coloured mesh (.glb default, .ply, .obj), in
    the same frame (y up, which is glTF's convention too)."""
    path = args.mesh or os.path.splitext(args.output)[0] + "_mesh.glb"
    try:
        from .model import meshing

        m = meshing.mesh_points(xyz, rgb)
        meshing.write_mesh(path, m)
    except ImportError as exc:
        print(f"image2points reconstruct: --mesh needs scipy, PyMCubes and trimesh ({exc}): "
              "pip install scipy PyMCubes trimesh", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"image2points reconstruct: --mesh: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"image2points reconstruct: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    tight = "watertight" if meshing.is_watertight(m.faces) else "NOT watertight"
    print(f"wrote a {len(m.faces)}-face {tight} mesh to {path}")
    return 0


def _density_arg(text: str) -> int:
    from .model.lift import MAX_DENSITY, MIN_DENSITY

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not MIN_DENSITY <= n <= MAX_DENSITY:
        raise argparse.ArgumentTypeError(f"must be from {MIN_DENSITY} to {MAX_DENSITY}, not {n}")
    return n


def cmd_keys(args: argparse.Namespace) -> int:
    import zmq.auth

    os.makedirs(args.dir, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(args.dir, args.name)
    print(f"public key: {pub}\nsecret key: {sec} (keep it private)")
    return 0


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="image2points", description="Image2Points backend")
    p.add_argument("--version", action="version", version=f"image2points {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the backend service")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=int, default=5555, help="TCP port (0 = pick a free one)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: half the cores, leaving Blender room)")
    s.add_argument("--checkpoint", default=None, help="model checkpoint (default: shipped one)")
    s.add_argument("--lazy", action="store_true", help="load the model on the first job")
    d = Limits()  # the defaults are Limits' own
    s.add_argument("--max-queue", type=int, default=d.max_queue)
    s.add_argument("--max-batch", type=int, default=d.max_batch)
    s.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_s * 1000.0)
    s.add_argument("--max-image-px", type=int, default=math.isqrt(d.max_pixels),
                   help="max image side (pixels^2 cap)")
    s.add_argument("--max-image-mb", type=int, default=d.max_image_bytes >> 20,
                   help="max encoded image size")
    s.add_argument("--max-message-mb", type=int, default=d.max_message_bytes >> 20,
                   help="ZeroMQ MAXMSGSIZE per frame")
    s.add_argument("--max-points", type=int, default=d.max_points, help="max points per result")
    s.add_argument("--max-inflight", type=int, default=d.max_inflight_per_client,
                   help="queued+running jobs per client")
    s.add_argument("--curve-secret", default=None, help="server .key_secret file (enables CURVE)")
    s.add_argument("--curve-clients", default=None, help="directory of allowed client .key files")
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without CURVE")
    s.add_argument("--connect-broker", default=None, metavar="tcp://HOST:PORT",
                   help="run as a worker of 'image2points broker' instead of listening")
    s.add_argument("--broker-key", default=None,
                   help="the broker's public .key file (CURVE to the broker; with --curve-secret "
                        "as this worker's own key pair)")
    s.add_argument("--ready-file", default=None, help="write the bound port here once listening")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("ping", help="check that a backend answers")
    s.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    s.add_argument("--timeout", type=float, default=3.0)
    s.add_argument("--server-key", default=None, help="the server's public .key file (CURVE)")
    s.add_argument("--client-key", default=None, help="this client's .key_secret file (CURVE)")
    s.set_defaults(func=cmd_ping)

    s = sub.add_parser("reconstruct", help="one image -> PLY, in-process (no server)")
    s.add_argument("image")
    s.add_argument("-o", "--output", required=True, help="output .ply")
    s.add_argument("--mesh", nargs="?", const="", default=None, metavar="OUT_MESH",
                   help="also write a watertight coloured mesh: .glb (default <output>_mesh.glb), "
                        ".ply or .obj")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--device", default="cpu")
    s.add_argument("--density", type=_density_arg, default=None,
                   help="points in the cloud, 10000-1000000 (default ~100k for a >= 256 px image)")
    s.add_argument("--mask", default=None, metavar="FILE",
                   help="object mask image (white or opaque = object), instead of the image's "
                        "alpha or the automatic cut")
    s.add_argument("--save-mask", default=None, metavar="OUT.png", help="write the mask that was used")
    s.add_argument("--strict", action="store_true",
                   help="refuse (exit 2) when the automatic cut looks wrong, instead of warning")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("keys", help="CurveZMQ key pairs")
    ks = s.add_subparsers(dest="keys_command", required=True)
    k = ks.add_parser("new", help="write NAME.key and NAME.key_secret into DIR")
    k.add_argument("dir")
    k.add_argument("--name", default="image2points")
    k.set_defaults(func=cmd_keys)

    for name, module in PLUGINS.items():
        if only is not None and only != name:
            continue
        try:
            mod = importlib.import_module(module, __package__)
        except ImportError as exc:
            if only == name:
                raise SystemExit(f"image2points {name} is unavailable here: {exc}") from None
            continue
        register: Callable[[argparse._SubParsersAction], None] = mod.register
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    # a built-in command imports no plugin (fast start); an unknown one gets the full parser, so
    # its error lists every command
    only = first if first in PLUGINS else ("" if first in BUILTINS else None)
    args = build_parser(only).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
