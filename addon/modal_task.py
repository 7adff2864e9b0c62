"""One way to drive a long job from an operator: a modal timer in the UI, blocking in scripts.

The job itself lives in a task object (job_task.BackendTask for every backend job, or the NeRF
capture) with ``start(context)``, ``tick(context)``, ``run_blocking(context)``,
``report(report)``, ``cancel_requested`` and ``outcome``; the operator only makes it
(``make_task``) and decides who drives it. Mix in before ``bpy.types.Operator`` (as
``ImportHelper`` does). Install Backend overrides ``begin``/``report_task`` for its subprocess task.
"""

from __future__ import annotations

from typing import Any

import bpy

from .core.client import BackendError


class ModalTaskOperator:
    """invoke -> modal timer -> tick; execute -> run_blocking; ESC and Blender's cancel() stop it."""

    timer_interval = 0.1
    _task: Any = None
    _timer: Any = None

    def make_task(self, context: Any) -> Any:
        """The task, not started yet (the operator's one hook)."""
        raise NotImplementedError

    def begin(self, context: Any) -> set[Any]:
        """Make and start the task (what invoke() does before the timer takes over)."""
        try:
            self._task = self.make_task(context).start(context)
        except BackendError as exc:
            self._task = None
            self.report({"ERROR"}, f"Image2Points: [{exc.code}] {exc.message}")  # type: ignore[attr-defined]
            return {"CANCELLED"}
        return {"RUNNING_MODAL"}

    def report_task(self, task: Any) -> None:
        task.report(self.report)  # type: ignore[attr-defined]

    def tick(self, context: Any) -> set[Any]:
        """The modal timer's work, callable directly (timers never fire in the bpy module)."""
        task = self._task
        if task is None:
            return {"CANCELLED"}
        outcome = task.tick(context)
        if outcome != {"RUNNING_MODAL"}:
            self.report_task(task)
        return outcome

    def execute(self, context: Any) -> set[Any]:
        """Blocking, with a deadline: for scripts and background mode."""
        if self.begin(context) != {"RUNNING_MODAL"} or self._task is None:
            return {"CANCELLED"}
        outcome = self._task.run_blocking(context)
        self.report_task(self._task)
        return outcome

    def invoke(self, context: Any, event: Any) -> set[Any]:
        if bpy.app.background or getattr(context, "window", None) is None:
            return self.execute(context)
        if self.begin(context) != {"RUNNING_MODAL"}:
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(self.timer_interval, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[Any]:
        if event.type == "ESC" and event.value == "PRESS" and self._task is not None:
            self._task.cancel_requested = True
        elif event.type != "TIMER":  # (any window timer: a spare tick costs one poll(0))
            return {"PASS_THROUGH"}
        outcome = self.tick(context)
        if outcome == {"RUNNING_MODAL"}:
            return {"RUNNING_MODAL"} if event.type == "ESC" else {"PASS_THROUGH"}
        self._remove_timer(context)
        return outcome

    def cancel(self, context: Any) -> None:  # Blender ends the modal (file load, window closed)
        if self._task is not None and not self._task.outcome:
            self._task.cancel_requested = True
            self._task.tick(context)
        self._remove_timer(context)

    def _remove_timer(self, context: Any) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
