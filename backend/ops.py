"""What an op is: the Job it gets, the Output or JobError it gives back, and its OpSpec.

An op is a plain function of a Job (or, for batchable ops, of a list of Jobs, so queued work can
share one forward pass). Ops never see sockets: they report through ``job.progress`` and raise
``JobError`` with a protocol error code, and the server turns both into wire messages. Op modules
import this module and nothing imports them back but ``registry.py``, which lists them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from image2points.addon.core.protocol import ERROR_CODES


class JobError(Exception):
    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(eq=False)  # jobs are compared by identity (their blobs are arrays)
class Job:
    id: str
    op: str
    params: dict[str, Any]
    blobs: dict[str, Any]
    device: Any = "cpu"
    client: bytes = b""
    _progress: Callable[[Job, float, str, dict | None, dict | None], None] | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, value: float, stage: str, extra: dict | None = None,
                 blobs: dict[str, np.ndarray] | None = None) -> None:
        if self._progress is not None:
            self._progress(self, value, stage, extra, blobs)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancel(self) -> None:
        """Call at stage boundaries: stops the job with a CANCELLED error if asked to."""
        if self._cancel.is_set():
            raise JobError("CANCELLED", "cancelled by the client")


@dataclass
class Output:
    meta: dict[str, Any]
    blobs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class OpSpec:
    name: str
    fn: Callable[..., Any]
    batch: bool = False
    requires: tuple[str, ...] = ()  # blobs a job cannot run without: refused at admission


def register_op(name: str, batch: bool = False, requires: tuple[str, ...] = ()
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@register_op("x")`` for ``fn(job) -> Output``; with batch=True ``fn(jobs, limits) ->
    list``. It attaches the OpSpec as ``fn.op_spec``; ``registry.py`` puts it in the table.

    ``requires`` names the blobs every job of the op must carry; the server's front end refuses a
    submit without them (BAD_INPUT) before it takes a queue slot.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.op_spec = OpSpec(name, fn, batch, tuple(requires))  # type: ignore[attr-defined]
        return fn

    return deco
