"""Install Backend's step runner (no bpy): polled without blocking, one line on failure."""

from __future__ import annotations

import sys
import time

import pytest

from image2points.addon import backend_install as bi


def drive(task: bi.InstallTask, limit: float = 60.0) -> tuple[set[str], int]:
    """Tick like the modal timer does; returns the outcome and how many ticks were 'running'."""
    task.begin()
    running = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        outcome = task.tick()
        if outcome != {"RUNNING_MODAL"}:
            return outcome, running
        running += 1
        time.sleep(0.02)
    raise AssertionError("never finished")


def test_steps_run_in_order_polled_without_blocking(tmp_path):
    steps = [bi.Step("first", [sys.executable, "-c", "import time; time.sleep(0.3); print('one')"]),
             bi.Step("second", [sys.executable, "-c", "print('two')"])]
    task = bi.InstallTask(steps, str(tmp_path / "log" / "install.log"))
    outcome, running = drive(task)
    assert outcome == {"FINISHED"} and running >= 5 and task.error == ""
    log = (tmp_path / "log" / "install.log").read_text()
    assert log.index("one") < log.index("two") and task.status.startswith("Backend installed")


def test_a_failing_step_is_one_line_with_the_log_and_the_commands(tmp_path):
    steps = [bi.Step("installing the backend", [sys.executable, "-c", "import sys; print('no such wheel'); sys.exit(3)"]),
             bi.Step("never", [sys.executable, "-c", "print('not run')"])]
    task = bi.InstallTask(steps, str(tmp_path / "install.log"))
    assert drive(task)[0] == {"CANCELLED"}
    assert task.error.startswith("Install Backend: installing the backend failed (exit code 3): no such wheel.")
    assert f"Log: {tmp_path / 'install.log'}" in task.error and "By hand: " in task.error
    assert "not run" not in (tmp_path / "install.log").read_text() and "\n" not in task.error


def test_cancel_ends_the_running_step(tmp_path):
    task = bi.InstallTask([bi.Step("slow", [sys.executable, "-c", "import time; time.sleep(60)"])],
                          str(tmp_path / "install.log"))
    task.begin()
    assert task.tick() == {"RUNNING_MODAL"}
    task.cancel_requested = True
    assert task.tick() == {"CANCELLED"} and task.proc is not None and task.proc.poll() is not None
    assert "cancelled by the user" in task.error


def test_plan_picks_the_torch_build_and_skips_an_existing_environment(tmp_path):
    steps = bi.plan("/py", str(tmp_path / "venv"), "image2points", "CPU", [], platform="linux")
    assert [s.label for s in steps] == ["creating the environment", "installing PyTorch",
                                        "installing the backend", "checking the backend"]
    assert steps[1].argv[-2:] == ["--index-url", bi.CPU_INDEX]
    assert bi.torch_args("CUDA", "linux") == ["torch"] and "cu124" in bi.torch_args("CUDA", "win32")[-1]
    with pytest.raises(ValueError, match="macOS"):
        bi.torch_args("CUDA", "darwin")
    vpy = tmp_path / "venv" / "bin" / "python"
    vpy.parent.mkdir(parents=True)
    vpy.write_text("")
    steps = bi.plan("/py", str(tmp_path / "venv"), " ./dist/x.whl ", "NONE", ["--no-index"], platform="linux")
    assert [s.label for s in steps] == ["installing the backend", "checking the backend"]
    assert steps[0].argv[-2:] == ["--no-index", "./dist/x.whl"]
    with pytest.raises(ValueError, match="Backend Package is empty"):
        bi.plan("/py", str(tmp_path / "venv"), "  ", "CPU", [])
