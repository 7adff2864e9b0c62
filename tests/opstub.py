"""A stand-in for a modal operator instance: bpy cannot instantiate operators directly, and in the
bpy module timers never fire, so tests drive ``begin``/``tick``/``modal`` by hand."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class OperatorStub:
    def __init__(self, op: Any, endpoint: str, timeout: float):
        self.op = op
        self.endpoint, self.connect_timeout, self.timeout = endpoint, 5.0, timeout
        self._task = self._timer = None
        self.reports: list[tuple[set[str], str]] = []

    def settings(self, ctx):
        from image2points.addon import connection

        return connection.effective_settings(ctx, self.endpoint, self.connect_timeout, self.timeout)

    def report(self, level, msg):
        self.reports.append((level, msg))

    def report_task(self, task):
        return self.op.report_task(self, task)

    def make_task(self, ctx):
        return self.op.make_task(self, ctx)

    def begin(self, ctx):
        return self.op.begin(self, ctx)

    def tick(self, ctx):
        return self.op.tick(self, ctx)

    def modal(self, ctx, event_type="TIMER"):
        return self.op.modal(self, ctx, SimpleNamespace(type=event_type, value="PRESS"))

    def _remove_timer(self, ctx):
        self.op._remove_timer(self, ctx)
