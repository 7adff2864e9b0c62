"""Diagnostic ops that need no model: ``echo`` returns its input array.

Why: load, fuzz and fault tests (and ``image2points ping``-style smoke checks of a farm) must
exercise the server's queueing, batching, routing and cancel paths without paying for a forward
pass or depending on a trained checkpoint. ``echo`` costs nothing, is batchable, and can hold a
job for a bounded time (``delay_s``) so tests can kill or cancel a job while it runs.
"""

from __future__ import annotations

import os
import time

from .limits import Limits
from .ops import Job, JobError, Output, register_op

MAX_DELAY_S = 10.0


def _delay(job: Job) -> float:
    d = job.params.get("delay_s", 0.0)
    if not isinstance(d, (int, float)) or isinstance(d, bool) or not 0.0 <= d <= MAX_DELAY_S:
        raise JobError("BAD_INPUT", f"delay_s must be a number in [0, {MAX_DELAY_S}]")
    return float(d)


@register_op("echo", batch=True)
def echo(jobs: list[Job], limits: Limits | None = None) -> list[Output | JobError]:
    """Each job gets back its blob ``data`` (any whitelisted dtype), plus its batch size."""
    outs: list[Output | JobError] = []
    delays: list[float] = []
    for job in jobs:
        try:
            delays.append(_delay(job))
        except JobError as exc:
            delays.append(-1.0)
            outs.append(exc)
            continue
        outs.append(Output({}))
    # Hold the batch for the longest requested delay, checking cancel at 50 ms "stage boundaries".
    hold = max([d for d in delays if d >= 0.0], default=0.0)
    t_end = time.monotonic() + hold
    step = 0
    while time.monotonic() < t_end:
        if all(j.cancelled() for j in jobs):
            break
        time.sleep(min(0.05, max(0.0, t_end - time.monotonic())))
        step += 1
        if step % 4 == 0:
            for j in jobs:
                j.progress(min(0.95, 0.1 + 0.8 * (1 - (t_end - time.monotonic()) / hold)), "echoing")
    for i, job in enumerate(jobs):
        if isinstance(outs[i], JobError):
            continue
        try:
            job.check_cancel()
        except JobError as exc:
            outs[i] = exc
            continue
        data = job.blobs.get("data")
        blobs = {"data": data} if data is not None and hasattr(data, "dtype") else {}
        outs[i] = Output({"batch": len(jobs), "pid": os.getpid(), "params": {k: v for k, v in job.params.items()
                                                         if isinstance(v, (int, float, str))}},
                         blobs)
    return outs
