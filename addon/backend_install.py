"""Install Backend: a private virtual environment with the backend in it, made by pip.

No bpy here (the operator in preferences.py drives it), and no threads: each step is a
``subprocess.Popen`` whose output goes to a log file; ``tick()`` polls it without blocking (a
modal timer calls it), ``run_blocking()`` waits (scripts, background mode). The environment lives
in Blender's user extension data folder, never in the add-on folder, so upgrading or removing
the extension leaves it alone. A failure is one line: the step, its exit code, its last output,
the log's path and the commands to run by hand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

TORCH_CHOICES = [
    ("CPU", "CPU", "PyTorch for the processor only: a smaller download (about 200 MB), works everywhere"),
    ("CUDA", "NVIDIA GPU (CUDA)", "PyTorch with CUDA for an NVIDIA graphics card (a download of a few GB)"),
    ("NONE", "Keep / from the package", "Do not install PyTorch separately: keep the environment's, or "
     "let the package bring its own"),
]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu124"  # Windows: PyPI's own torch there is CPU-only
PIP = ["-m", "pip", "install", "--upgrade", "--disable-pip-version-check", "--no-input",
       "--progress-bar", "off"]


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv, "bin", "python")


def venv_exe(venv: str) -> str:
    """The backend's console script inside the environment."""
    return os.path.join(venv, "Scripts", "image2points.exe") if os.name == "nt" \
        else os.path.join(venv, "bin", "image2points")


def torch_args(choice: str, platform: str = sys.platform) -> list[str]:
    """pip arguments that install the chosen PyTorch build ([] = no separate step)."""
    if choice == "CPU":
        return ["torch"] if platform == "darwin" else ["torch", "--index-url", CPU_INDEX]
    if choice == "CUDA":
        if platform == "darwin":
            raise ValueError("there is no CUDA PyTorch for macOS; choose CPU")
        return ["torch", "--index-url", CUDA_INDEX] if platform == "win32" else ["torch"]
    return []


@dataclass
class Step:
    label: str
    argv: list[str]


def plan(python: str, venv: str, package: str, torch: str, pip_args: list[str],
         platform: str = sys.platform) -> list[Step]:
    """The commands, in order: make the environment (unless it exists), PyTorch, the backend,
    then check that it imports."""
    package = package.strip()
    if not package:
        raise ValueError("Backend Package is empty: give a package name (image2points), a wheel "
                         "file or a git URL")
    vpy = venv_python(venv)
    steps = []
    if not os.path.isfile(vpy):
        steps.append(Step("creating the environment", [python, "-m", "venv", venv]))
    t = torch_args(torch, platform)
    if t:
        steps.append(Step("installing PyTorch", [vpy, *PIP, *pip_args, *t]))
    steps.append(Step("installing the backend", [vpy, *PIP, *pip_args, package]))
    steps.append(Step("checking the backend", [vpy, "-c", "import torch, zmq, image2points.backend.cli"]))
    return steps


def command_line(argv: list[str]) -> str:
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


def manual_commands(steps: list[Step]) -> str:
    return " && ".join(command_line(s.argv) for s in steps)


def last_line(path: str, limit: int = 4096) -> str:
    """The last non-empty line of a log (read from its end only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    return next((ln for ln in reversed(lines) if ln), "")


@dataclass
class InstallTask:
    """Runs the steps one after the other; ``status``/``progress``/``error`` are for the panel."""

    steps: list[Step]
    log_path: str
    env: dict[str, str] | None = None
    index: int = -1
    proc: subprocess.Popen[bytes] | None = None
    cancel_requested: bool = False
    outcome: set[str] = field(default_factory=set)
    status: str = ""
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def progress(self) -> float:
        return max(0, self.index) / max(1, len(self.steps))

    def _start_next(self) -> None:
        self.index += 1
        step = self.steps[self.index]
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {command_line(step.argv)}\n".encode())
            log.flush()
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
            self.proc = subprocess.Popen(step.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, creationflags=flags)
        self.status = f"{step.label} ({self.index + 1}/{len(self.steps)})"

    def begin(self) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "wb") as log:
            log.write(f"Image2Points: Install Backend, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._start_next()

    def tick(self, _context: Any = None) -> set[str]:
        """Never blocks: {'RUNNING_MODAL'} while a step runs, else {'FINISHED'} / {'CANCELLED'}."""
        if self.outcome:
            return self.outcome
        proc = self.proc
        assert proc is not None
        if self.cancel_requested:
            self._stop(proc)
            return self._fail("cancelled by the user")
        code = proc.poll()
        if code is None:
            step = self.steps[self.index]
            line = last_line(self.log_path)
            self.status = f"{step.label} ({self.index + 1}/{len(self.steps)})" + (f": {line[:90]}" if line else "")
            return {"RUNNING_MODAL"}
        if code != 0:
            step = self.steps[self.index]
            return self._fail(f"{step.label} failed (exit code {code}): {last_line(self.log_path)[:200]}")
        if self.index + 1 < len(self.steps):
            try:
                self._start_next()
            except OSError as exc:
                return self._fail(f"{self.steps[self.index].label} could not start: {exc}")
            return {"RUNNING_MODAL"}
        self.status = f"Backend installed ({time.monotonic() - self.started:.0f} s)"
        self.outcome = {"FINISHED"}
        return self.outcome

    def run_blocking(self, _context: Any = None, poll_s: float = 0.2) -> set[str]:
        while True:
            outcome = self.tick()
            if outcome != {"RUNNING_MODAL"}:
                return outcome
            if self.proc is not None:
                try:
                    self.proc.wait(poll_s)
                except subprocess.TimeoutExpired:
                    pass

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _fail(self, what: str) -> set[str]:
        self.error = (f"Install Backend: {what}. Log: {self.log_path}. By hand: "
                      f"{manual_commands(self.steps)}")
        self.status = "Install Backend failed" if not self.cancel_requested else "Install Backend cancelled"
        self.outcome = {"CANCELLED"}
        return self.outcome

    def stop(self) -> None:
        """End a running step (unregister, quit)."""
        if self.proc is not None and not self.outcome:
            self._stop(self.proc)
            self.outcome = {"CANCELLED"}
