"""Argument types and one-line errors shared by the ``image2points`` subcommands.

Why: a nonsense number (``--batch 0``, ``--lr nan``) should be a usage error before any work,
and an expected failure (no data, an unwritable folder) one line on stderr with exit code 2, not
a traceback minutes into a run. No torch here: it is imported by every command's parser.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path


def number(kind: type, low: float, what: str, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` (int or float) in [low, high]."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not (math.isfinite(v) and low <= v <= high):
            raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
        return v

    return parse


pos_int = number(int, 1, "a positive integer")
nonneg_int = number(int, 0, "0 or more")
pos_float = number(float, 1e-9, "a positive number")
nonneg_float = number(float, 0.0, "0 or more")
fraction = number(float, 0.0, "in [0, 1]", 1.0)


def err(msg: str, prog: str = "error") -> int:
    print(f"{prog}: {msg}", file=sys.stderr)
    return 2


def why(e: OSError) -> str:
    return f"{e.strerror or e}" + (f" ({e.filename})" if getattr(e, "filename", None) else "")


def writable_dir(path: str | Path, flag: str) -> str | None:
    """Why folder ``path`` cannot be made and written (None when it can): checked before work."""
    import tempfile

    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"cannot write to {flag} {p}: it is a file, not a folder"
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".i2p-write-test-"):
            pass
    except OSError as e:
        return f"cannot write to {flag} {p}: {why(e)}"
    return None


def writable_file(path: str | Path, flag: str) -> str | None:
    """Why file ``path`` cannot be written (None when it can): checked before a long run."""
    p = Path(path)
    if p.is_dir():
        return f"{flag} {p} is a folder; give a file name"
    reason = writable_dir(p.parent, "")
    return None if reason is None else f"cannot write {flag} {p}: {reason.split(': ', 1)[-1]}"
