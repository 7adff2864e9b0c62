"""``image2points bench [NAME...] [--quick]`` / ``python -m image2points.bench``: run benchmarks, save JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from image2points.backend import threads
from image2points.backend.cli_args import err, writable_dir

NAMES = ["import", "wire", "roundtrip", "model", "serve", "nerf", "mesh"]
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run(args: argparse.Namespace) -> int:
    threads.quiet_openmp()
    names = args.names or NAMES
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        return err(f"unknown benchmark(s) {unknown}; choose from {NAMES}", "image2points bench")
    reason = None if args.quick else writable_dir(RESULTS, "results folder")  # e.g. site-packages
    if reason:
        return err(f"{reason}; --quick writes nothing", "image2points bench")
    failed = []
    t_all = time.perf_counter()
    for name in names:
        mod = importlib.import_module(f".bench_{name}", __package__)
        t0 = time.perf_counter()
        print(f"\n### {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            result = mod.run(quick=args.quick)
        except Exception as exc:  # report and go on; the exit code says something failed
            print(f"!! {name} failed: {exc.__class__.__name__}: {exc}", flush=True)
            failed.append(name)
            continue
        doc = {"benchmark": name, "quick": args.quick, "machine": machine(),
               "seconds": round(time.perf_counter() - t0, 2), "result": result}
        if not args.quick:
            (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str))
        print(f"({name}: {doc['seconds']} s)", flush=True)
    print(f"\n{len(names) - len(failed)} of {len(names)} benchmarks ran in "
          f"{time.perf_counter() - t_all:.0f} s" + (f"; failed: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run benchmarks (ratios against same-run baselines)")
    p.add_argument("names", nargs="*", help=f"any of {NAMES} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks each benchmark runs")
    p.set_defaults(func=run)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m image2points.bench")
    register(parser.add_subparsers(dest="command", required=True))
    sys.exit(run(parser.parse_args(["bench", *sys.argv[1:]])))
