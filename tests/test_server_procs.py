"""Helpers for the server tests (real processes on loopback), plus their own smoke checks.

Nothing here sleeps to synchronise: ``wait_until`` polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, BackendProcess

from image2points.addon.core.client import BackendError, Client

CLI = [sys.executable, "-m", "image2points.backend.cli"]


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
    """`image2points broker` on free loopback ports (stderr=PIPE: see ``stop_and_read_stderr``)."""

    def __init__(self, *extra: str, timeout: float = 30.0, stderr: int = subprocess.STDOUT):
        self.dir = tempfile.mkdtemp(prefix="i2p-broker-")
        ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*CLI, "broker", "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0",
             "--ready-file", ready, *extra], cwd=ROOT, stdout=self.log, stderr=stderr)
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


class PipedBackend(BackendProcess):
    """`image2points serve` whose stderr is a pipe that nobody reads while it runs (a parent that
    never reads it, a stuck terminal) or a file of its own: logging must never make it wait."""

    def __init__(self, *extra: str, stderr_path: str | None = None, timeout: float = 60.0):
        self.dir = tempfile.mkdtemp(prefix="i2p-backend-")
        ready = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "stdout.log")
        self.log = open(self.log_path, "w")
        self.err = open(stderr_path, "w") if stderr_path else None
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--port", "0", "--threads", "1", "--ready-file", ready, *extra],
            cwd=ROOT, stdout=self.log, stderr=self.err or subprocess.PIPE)
        wait_until(lambda: os.path.exists(ready) or self.proc.poll() is not None, timeout,
                   "the backend to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"backend did not start:\n{self.output()}")
        self.port = int(Path(ready).read_text())
        self.endpoint = f"tcp://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        rc = super().stop(sig, timeout)
        if self.err is not None:
            self.err.close()
        return rc


def stop_and_read_stderr(proc: subprocess.Popen, timeout: float = 20.0,
                         during: Callable[[], Any] | None = None) -> tuple[int, float, bytes]:
    """SIGTERM a process whose stderr is an unread pipe: (exit code, seconds to exit, stderr).
    Reading only after the exit is the point: whatever it logged had to fit in the pipe.
    ``during`` is called until it exits (a client must read its SHUTDOWN before the socket goes)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        while during is not None and proc.poll() is None and time.monotonic() - t0 < timeout:
            during()
        rc = proc.wait(max(0.1, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    took = time.monotonic() - t0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert rc is not None, f"still running {timeout} s after SIGTERM; stderr: {err[-2000:]!r}"
    return rc, took, err


def worker(broker: BrokerProcess, *extra: str) -> BackendProcess:
    return BackendProcess("--connect-broker", broker.backend, "--lazy", *extra)


def check_strangers_cannot_touch_a_job(owner: Client, stranger: Client) -> str:
    """Job ids are no secret (logs, screenshots): another client that re-sends or cancels one
    must neither take its result nor stop it, and is told only "unknown job". The owner's own
    re-send from a new socket is still followed. Returns the job id."""
    data = np.arange(6, dtype=np.float32)
    job = owner.submit("echo", {"delay_s": 1.0}, {"data": data})
    # the backend has it before the stranger asks (two connections are not ordered)
    wait_until(lambda: any(ev.job == job for ev in owner.poll_events(0.2)), 10, "it queued")
    stranger.submit("echo", {}, {"data": data * 0}, job=job)
    with pytest.raises(BackendError) as err:
        stranger.wait(job, timeout=20, stall_timeout=10, retries=0)
    assert err.value.code == "BAD_INPUT" and "unknown job" in err.value.message, err.value
    stranger.cancel(job)
    assert stranger.ping() >= 0  # the cancel was handled first: one connection keeps order
    assert owner.reconnect(resend=True)
    res = owner.wait(job, timeout=20, stall_timeout=5, retries=0)
    assert np.array_equal(res.blobs["data"], data)
    return job


def test_wait_until_raises_on_deadline():
    t0 = time.monotonic()
    try:
        wait_until(lambda: False, 0.1, "nothing")
    except AssertionError as exc:
        assert "nothing" in str(exc)
    assert time.monotonic() - t0 < 2
