"""One way for benchmarks to start a real backend process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_backend(threads: int, *extra: str) -> tuple[subprocess.Popen, str]:
    """`image2points serve --port 0 ...`; returns the process and its endpoint once it listens."""
    ready = os.path.join(tempfile.mkdtemp(prefix="i2p-bench-"), "port")
    proc = subprocess.Popen([sys.executable, "-m", "image2points.backend.cli", "serve", "--port", "0",
                             "--threads", str(threads), "--ready-file", ready, "--log-level",
                             "WARNING", *extra], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("backend did not start")
        time.sleep(0.05)
    return proc, f"tcp://127.0.0.1:{Path(ready).read_text()}"
