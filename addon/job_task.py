"""The one skeleton of a backend job seen from Blender: submit, then poll (modal timer) or wait
(scripts), then import; ModalTaskOperator (modal_task.py) drives it.

A subclass names its op and the job state it shows in (``slot``: "job" or "nerf_job" of the
WindowManager state; one running job per slot) and gives ``request()`` (what to send) and
``on_result()`` (what to make of the answer). Each task has a socket of its own, closed when it
ends; a failure of any kind ends in ``fail()`` with a coded error in the panel, never a stale job.
"""

from __future__ import annotations

import time
from typing import Any

from . import preferences, props
from .connection import describe_backend, end_client, error_text, internal_error, new_client, unreachable_line
from .core.client import BackendError, Client, Done, JobResult, Progress

_active: dict[str, Any] = {}  # slot -> the running task (a BackendTask or a capture)


def active(slot: str) -> Any:
    return _active.get(slot)


def claim(slot: str, task: Any, busy: str) -> None:
    """Register ``task`` as the slot's running job; BUSY if another one is."""
    if _active.get(slot) not in (None, task):
        raise BackendError("BUSY", busy)
    _active[slot] = task


def release(slot: str, task: Any) -> None:
    if _active.get(slot) is task:
        del _active[slot]


def release_all() -> None:
    _active.clear()


def fail_job(context: Any, slot: str, exc: BackendError, endpoint: str) -> None:
    """Show a failure (or a cancel, which is no error) in the slot's state."""
    cancelled = exc.code == "CANCELLED"
    props.set_job(context, slot, running=False, job_id="", stage="cancelled" if cancelled else "failed",
                  status="Cancelled" if cancelled else "Failed",
                  error_code="" if cancelled else exc.code,
                  error_message="" if cancelled else exc.message)
    if exc.code in {"UNREACHABLE", "OFFLINE"}:
        props.set_state(context, backend_ok=False, backend_status=unreachable_line(endpoint, exc))


def report_error(report: Any, error: BackendError | None) -> None:
    if error is not None:
        level = "WARNING" if error.code == "CANCELLED" else "ERROR"
        report({level}, f"Image2Points: {error_text(error)}")


class BackendTask:
    """One backend job, driven by ``tick()`` (modal timer; never blocks) or ``run_blocking()``."""

    op = ""
    slot = "job"
    what = "job"  # in messages: "<what> did not finish within ..."
    busy = "a reconstruction is already running; cancel it first"

    def __init__(self, cfg: preferences.Settings):
        self.cfg = cfg
        self.client: Client | None = None
        self.info: dict[str, Any] = {}
        self.job = ""
        self.cancel_requested = False
        self.outcome: set[str] = set()
        self.error: BackendError | None = None
        self.warnings: list[str] = []
        self.summary = ""  # the one line a finished task reports
        self.progress_events = 0
        self.timeout = cfg.job_timeout
        self.t0 = self.last_heard = time.monotonic()
        self.deadline = self.t0 + self.timeout

    # -- the subclass's part ---------------------------------------------------------------------
    def request(self, context: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """(params, blobs, media) to submit; reads Blender's data, so may raise BackendError."""
        raise NotImplementedError

    def submitted(self) -> str:
        """The status line while the job runs."""
        return f"Running {self.op}"

    def on_result(self, context: Any, res: JobResult) -> str:
        """Import the result; returns the status line. A BackendError fails the task."""
        raise NotImplementedError

    def on_progress(self, context: Any, value: float, stage: str, msg: Any) -> None:
        self.progress_events += 1
        props.set_job(context, self.slot, progress=max(0.0, min(1.0, value)), stage=stage,
                      progress_events=self.progress_events)

    # -- the skeleton ----------------------------------------------------------------------------
    def start(self, context: Any) -> BackendTask:
        """Read the input, say hello (backend facts for provenance), submit and claim the slot.
        Raises BackendError (the state already shows it)."""
        if active(self.slot) is not None:
            raise BackendError("BUSY", self.busy)
        props.set_job(context, self.slot, running=False, error_code="", error_message="", progress=0.0,
                      stage="", status="Connecting...", job_id="", warning="", progress_events=0)
        try:
            params, blobs, media = self.request(context)
            self.client = new_client(self.cfg)
            self.info = self.client.hello(timeout=self.cfg.connect_timeout)
            props.set_state(context, backend_status=describe_backend(self.info), backend_ok=True)
            self.job = self.client.submit(self.op, params, blobs, media)
        except BackendError as exc:
            self.close()
            fail_job(context, self.slot, exc, self.cfg.endpoint)
            raise
        self.t0 = self.last_heard = time.monotonic()
        self.deadline = self.t0 + self.timeout
        claim(self.slot, self, self.busy)
        props.set_job(context, self.slot, running=True, job_id=self.job, stage="submitted",
                      status=self.submitted())
        return self

    def check(self, now: float) -> None:
        """Cancel, deadline and silence, each a coded error (the job is cancelled on the backend)."""
        assert self.client is not None
        why = None
        if self.cancel_requested:
            why = BackendError("CANCELLED", "cancelled by the user", self.job)
        elif now > self.deadline:
            why = BackendError("TIMEOUT", f"{self.what} did not finish within {self.timeout:.0f} s"
                               " (raise Job Timeout in the preferences)", self.job)
        elif now - self.last_heard > self.cfg.stall_timeout:
            why = BackendError("UNREACHABLE", f"backend at {self.cfg.endpoint} went silent for "
                               f"{self.cfg.stall_timeout:.0f} s (stopped or crashed?)", self.job)
        if why is not None:
            self.client.cancel(self.job)
            raise why

    def tick(self, context: Any) -> set[str]:
        """One timer tick: never blocks. Returns {'RUNNING_MODAL'}, {'FINISHED'} or {'CANCELLED'}."""
        if self.outcome:
            return self.outcome
        assert self.client is not None
        now = time.monotonic()
        try:
            self.check(now)
            for ev in self.client.poll_job(self.job):
                self.last_heard = now
                if isinstance(ev, Progress):
                    self.on_progress(context, ev.value, ev.stage, ev.message)
                elif isinstance(ev, Done):
                    return self.finish(context, ev.result)
                else:
                    raise ev.error
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001 - a modal must end cleanly, never leave a stale job
            return self.fail(context, internal_error(exc, self.job))
        return {"RUNNING_MODAL"}

    def run_blocking(self, context: Any) -> set[str]:
        """Wait for the end (scripts, background mode: timers never fire there)."""
        assert self.client is not None
        try:
            res = self.client.wait(
                self.job, timeout=max(0.0, self.deadline - time.monotonic()),
                stall_timeout=self.cfg.stall_timeout,
                on_progress=lambda v, stage, msg: self.on_progress(context, v, stage, msg),
                should_cancel=lambda: self.cancel_requested)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        return self.finish(context, res)

    def finish(self, context: Any, res: JobResult) -> set[str]:
        try:
            status = self.on_result(context, res)
        except BackendError as exc:
            return self.fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            return self.fail(context, internal_error(exc, self.job))
        finally:
            self.close()
        props.set_job(context, self.slot, running=False, progress=1.0, stage="done", job_id="",
                      warning="; ".join(self.warnings), status=status)
        self.outcome = {"FINISHED"}
        return self.outcome

    def fail(self, context: Any, exc: BackendError) -> set[str]:
        self.close()
        self.error = exc
        fail_job(context, self.slot, exc, self.cfg.endpoint)
        self.outcome = {"CANCELLED"}
        return self.outcome

    def close(self) -> None:
        """Give the slot back and close the socket (safe to call twice)."""
        release(self.slot, self)
        if self.client is not None:
            end_client(self.client)

    def report(self, report: Any) -> None:
        """The operator's reports: the summary and warnings, or the error."""
        if self.outcome == {"FINISHED"}:
            report({"INFO"}, f"Image2Points: {self.summary}")
            for w in self.warnings:
                report({"WARNING"}, f"Image2Points: {w}")
        else:
            report_error(report, self.error)


class CancelOperator:
    """Mixin (before ``bpy.types.Operator``) for a Cancel button: asks the slot's running task to
    stop; its next tick cancels the job on the backend and shows it."""

    slot = "job"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return active(cls.slot) is not None

    def execute(self, context: Any) -> set[Any]:
        task = active(self.slot)
        if task is None:
            return {"CANCELLED"}
        task.cancel_requested = True
        props.set_job(context, self.slot, status="Cancelling...", stage="cancelling")
        return {"FINISHED"}
