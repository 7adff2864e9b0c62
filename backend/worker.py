"""The server's worker side: a bounded FIFO queue, micro-batching, and one thread running ops.

The worker thread is the only one that touches the model. It takes jobs from the queue (queued
jobs of a batchable op share one call) and hands every progress and final message back to the
front end over an inproc PUSH socket of its own: ZeroMQ sockets are not thread-safe, so no
socket is shared between threads. Failures become coded errors; the thread itself never dies.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from typing import Any

import zmq

from image2points.addon.core import protocol
from image2points.addon.core.protocol import ProtocolError

from . import logsafe
from .limits import Limits
from .ops import Job, JobError, OpSpec, Output

log = logging.getLogger("image2points.server")

UNLOAD = "__unload__"  # the control job behind a client's ``unload``


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    return name


def free_memory(device: str) -> dict[str, int]:
    """Free/total bytes of the device (CUDA) or of the host (CPU, from /proc/meminfo)."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return {"free": int(free), "total": int(total)}
    try:
        with open("/proc/meminfo") as f:
            kv = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.count(":")}
        return {"free": kv.get("MemAvailable", 0), "total": kv.get("MemTotal", 0)}
    except (OSError, ValueError, IndexError):
        return {}


class Worker:
    """Owns the queue and the worker thread; the front end calls ``put``/``remove``/``stop``
    from its own thread and reads replies from ``inbox_addr`` (a PULL socket it binds)."""

    def __init__(self, ctx: zmq.Context, ops: dict[str, OpSpec], limits: Limits, device: str,
                 preload: bool, tally: logsafe.Tally, throttle: logsafe.Throttle):
        self.ctx, self.ops, self.limits, self.device, self.preload = ctx, ops, limits, device, preload
        self.tally, self.throttle = tally, throttle
        self.inbox_addr = f"inproc://replies-{id(self)}"
        self.queue: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self._last_batch = 1  # size of the previous batch: a sign of concurrent clients
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="image2points-worker", daemon=True)

    # -- the front end's side ---------------------------------------------------------------
    def put(self, job: Job, control: bool = False) -> int | None:
        """Queue ``job``; its position, or None when the queue is full (control jobs always fit)."""
        with self.cv:
            if not control and len(self.queue) >= self.limits.max_queue:
                return None
            self.queue.append(job)
            self.cv.notify()
            return len(self.queue)

    def remove(self, job: Job) -> bool:
        """Take ``job`` out of the queue; False when it is not there (running, or done)."""
        with self.cv:
            if job not in self.queue:
                return False
            self.queue.remove(job)
            return True

    def queued(self) -> int:
        return len(self.queue)

    def stop(self) -> None:
        """Drop what is queued and let the thread end after the batch it runs (if any)."""
        with self.cv:
            self.stopping.set()
            self.queue.clear()
            self.cv.notify_all()

    def model_status(self) -> dict[str, Any]:
        from . import reconstruct_op

        return reconstruct_op.status()

    def progress(self, job: Job, value: float, stage: str, extra: dict | None,
                 blobs: dict | None) -> None:
        """``Job._progress``: called by an op in the worker thread."""
        self._out.send_multipart([job.id.encode(), *protocol.encode(
            protocol.progress_header(job.id, value, stage, **(extra or {})), blobs)], copy=False)

    # -- the worker thread ------------------------------------------------------------------
    def _take_batch(self) -> list[Job]:
        with self.cv:
            while not self.queue and not self.stopping.is_set():
                self.cv.wait(0.5)
            if not self.queue:
                return []
            first = self.queue.popleft()
            batch = [first]
            spec = self.ops.get(first.op)
            # Wait for company only when there is demand: jobs already queued, or the last batch
            # was shared. A lone client's job then runs at once instead of paying batch_wait_s.
            busy = bool(self.queue) or self._last_batch > 1
            if spec is not None and spec.batch and self.limits.max_batch > 1 and busy:
                deadline = time.monotonic() + self.limits.batch_wait_s
                while len(batch) < self.limits.max_batch:
                    same = [j for j in self.queue if j.op == first.op]
                    for j in same[: self.limits.max_batch - len(batch)]:
                        self.queue.remove(j)
                        batch.append(j)
                    left = deadline - time.monotonic()
                    if len(batch) >= self.limits.max_batch or left <= 0 or self.stopping.is_set():
                        break
                    self.cv.wait(left)
            self._last_batch = len(batch)
            return batch

    def _work(self) -> None:
        out = self.ctx.socket(zmq.PUSH)  # only this thread uses it
        out.setsockopt(zmq.LINGER, 1000)
        out.connect(self.inbox_addr)
        self._out = out
        if self.preload:
            from . import reconstruct_op

            try:
                reconstruct_op.get_model()
            except JobError as exc:
                log.warning("model not loaded: %s", exc.message)
        while not self.stopping.is_set():
            batch = self._take_batch()
            if batch:
                try:
                    self._run(batch, out)
                except Exception as exc:  # never lose the worker thread
                    logsafe.log_bug(log, self.tally, self.throttle, "in the worker", exc)
        out.close()

    def _run(self, batch: list[Job], out: zmq.Socket) -> None:
        op = batch[0].op
        live: list[Job] = []
        for job in batch:  # cancelled between the queue and here: don't start it
            if job.cancelled():
                self._send_final(out, job, op, JobError("CANCELLED", "cancelled by the client"), 0.0, 0)
            else:
                live.append(job)
                self.progress(job, 0.01, "started", None, None)
        if not live:
            return
        t0 = time.perf_counter()
        results: list[Any]
        try:
            if op == UNLOAD:
                from . import reconstruct_op

                results = [Output({"unloaded": reconstruct_op.unload()})]
                self._free_cuda()
            else:
                spec = self.ops[op]
                if spec.batch:
                    results = list(spec.fn(live, limits=self.limits))
                else:
                    results = [spec.fn(live[0])]
                if len(results) != len(live):
                    raise RuntimeError(f"op returned {len(results)} results for {len(live)} jobs")
        except JobError as exc:
            results = [exc] * len(live)
        except Exception as exc:  # map runtime failures to coded errors, keep serving
            oom = isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() \
                or exc.__class__.__name__.endswith("OutOfMemoryError")
            code = "OOM" if oom else "MODEL"
            if self.throttle.allow((op, exc.__class__.__name__)):  # all are counted as failed
                log.error("op %s failed (logged once per %.0f s):\n%s", op, self.throttle.every_s,
                          traceback.format_exc())
            results = [JobError(code, f"{op} failed: {exc.__class__.__name__}: {str(exc)[:300]}")
                       ] * len(live)
            if oom:
                self._free_cuda()
        dt = time.perf_counter() - t0
        for job, res in zip(live, results):
            self._send_final(out, job, op, res, dt, len(live))

    def _send_final(self, out: zmq.Socket, job: Job, op: str, res: Any, dt: float, n: int) -> None:
        if isinstance(res, JobError):
            frames = protocol.encode(protocol.error_header(job.id, res.code, res.message))
        else:
            try:
                frames = protocol.encode({"type": "result", "job": job.id, "op": op,
                                          "meta": res.meta}, res.blobs)
            except (ProtocolError, TypeError, ValueError) as exc:
                res = JobError("MODEL", f"{op} produced an unsendable result: {exc}")
                frames = protocol.encode(protocol.error_header(job.id, res.code, res.message))
        out.send_multipart([job.id.encode(), *frames], copy=False)
        # one line per job only at DEBUG; INFO gets the periodic counts (Tally)
        if isinstance(res, JobError):
            self.tally.add("failed", res.code)
            if res.code in ("MODEL", "OOM") and self.throttle.allow(("failed", op, res.code)):
                log.warning("job=%s op=%s failed %s: %s (logged once per %.0f s, all counted)",
                            job.id, op, res.code, res.message, self.throttle.every_s,
                            extra={"job": job.id, "op": op, "code": res.code})
        else:
            self.tally.add("done", op)
        log.debug("job=%s op=%s %s in %.3f s (batch %d)", job.id, op,
                  "failed " + res.code if isinstance(res, JobError) else "done", dt, n,
                  extra={"job": job.id, "op": op})

    @staticmethod
    def _free_cuda() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
