"""Helpers for the server tests (real processes on loopback), plus their own smoke checks.

Nothing here sleeps to synchronise: ``wait_until`` polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ROOT, BackendProcess

CLI = [sys.executable, "-m", "backend.cli"]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)  # polling interval, not synchronisation


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class BrokerProcess:
    """`image2points broker` on free loopback ports."""

    def __init__(self, *extra: str, timeout: float = 30.0):
        self.dir = tempfile.mkdtemp(prefix="i2p-broker-")
        ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*CLI, "broker", "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0",
             "--ready-file", ready, *extra], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(ready) or self.proc.poll() is not None, timeout,
                   "the broker to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"broker did not start:\n{self.output()}")
        eps = json.loads(Path(ready).read_text())
        self.endpoint, self.backend = eps["frontend"], eps["backend"]

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log_path).read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def worker(broker: BrokerProcess, *extra: str) -> BackendProcess:
    return BackendProcess("--connect-broker", broker.backend, "--lazy", *extra)


def test_wait_until_raises_on_deadline():
    t0 = time.monotonic()
    try:
        wait_until(lambda: False, 0.1, "nothing")
    except AssertionError as exc:
        assert "nothing" in str(exc)
    assert time.monotonic() - t0 < 2
