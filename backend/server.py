"""The Image2Points backend service: a ROUTER front end and one worker thread per device.

The front end (main thread) owns every socket and never runs a model, so hello/ping/cancel are
answered while a job computes. The worker takes jobs from a bounded FIFO queue (micro-batching
queued reconstruct jobs into one forward pass) and hands replies back over an inproc PUSH socket;
ZeroMQ sockets are not thread-safe, so no socket is shared between threads.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import zmq

from addon import protocol
from addon.protocol import ProtocolError

from . import __version__
from .ops import OPS, Job, JobError, Output, load_builtin_ops

log = logging.getLogger("image2points.server")

HEARTBEAT_S = 1.0


@dataclass
class Limits:
    max_message_bytes: int = 256 << 20
    max_image_bytes: int = 64 << 20
    max_pixels: int = 4096 * 4096
    max_queue: int = 64
    max_inflight_per_client: int = 32
    max_batch: int = 8
    batch_wait_s: float = 0.005

    def public(self) -> dict[str, int | float]:
        return dict(self.__dict__)


@dataclass
class Record:
    job: Job
    state: str = "queued"  # queued | running | done
    value: float = 0.0
    stage: str = "queued"
    done_at: float = 0.0
    final: list[Any] | None = None  # last frames, re-sent to a reconnecting client


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5555
    device: str = "auto"
    threads: int | None = None
    checkpoint: str | None = None
    preload: bool = True
    insecure: bool = False
    curve_secret: str | None = None  # path to the server's .key_secret file
    curve_clients: str | None = None  # directory of allowed client .key files
    limits: Limits = field(default_factory=Limits)


def is_loopback(host: str) -> bool:
    if host in {"localhost", "127.0.0.1", "::1"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    return name


class Server:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.limits = cfg.limits
        if not is_loopback(cfg.host) and cfg.curve_secret is None and not cfg.insecure:
            raise SystemExit(
                f"refusing to listen on {cfg.host} without CurveZMQ: pass --curve-secret and "
                "--curve-clients (see 'image2points keys new'), or --insecure to accept the risk")
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        load_builtin_ops()
        from . import reconstruct_op

        reconstruct_op.configure(self.device, cfg.checkpoint)
        self.ctx = zmq.Context()
        self.auth = None
        self.front = self.ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        self.front.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.front.setsockopt(zmq.SNDHWM, 10000)
        if cfg.curve_secret:
            self._setup_curve()
        if cfg.port == 0:
            self.port = self.front.bind_to_random_port(f"tcp://{cfg.host}")
        else:
            self.front.bind(f"tcp://{cfg.host}:{cfg.port}")
            self.port = cfg.port
        self.inbox_addr = f"inproc://replies-{id(self)}"
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(self.inbox_addr)
        self.records: dict[str, Record] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name="image2points-worker", daemon=True)

    def _setup_curve(self) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(self.cfg.curve_secret)
        if not secret:
            raise SystemExit(f"{self.cfg.curve_secret} holds no secret key")
        if not self.cfg.curve_clients or not os.path.isdir(self.cfg.curve_clients):
            raise SystemExit("--curve-clients must be a directory of allowed client .key files")
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=self.cfg.curve_clients)
        self.front.curve_secretkey = secret
        self.front.curve_publickey = public
        self.front.curve_server = True

    # -- front end -------------------------------------------------------------------------
    def hello_info(self) -> dict[str, Any]:
        from . import reconstruct_op

        info: dict[str, Any] = {
            "name": "image2points", "version": __version__, "protocol": protocol.PROTOCOL_VERSION,
            "device": self.device, "pid": os.getpid(), "ops": sorted(OPS),
            "model": reconstruct_op.status(), "limits": self.limits.public(),
            "queue": len(self.queue), "curve": self.cfg.curve_secret is not None,
        }
        if self.device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info(torch.device(self.device))
            info["memory"] = {"free": free, "total": total}
        return info

    def _reply(self, ident: bytes, header: dict[str, Any], blobs: dict | None = None) -> None:
        self._send([ident, *protocol.encode(header, blobs)])

    def _send(self, frames: list[Any]) -> None:
        try:
            self.front.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or its queue full
            log.info("reply dropped: %s", exc.strerror)

    def _error(self, ident: bytes, job: str, code: str, message: str) -> None:
        log.info("job=%s error %s: %s", job or "-", code, message)
        self._reply(ident, protocol.error_header(job, code, message))

    def _handle(self, frames: list[Any]) -> None:
        ident = bytes(frames[0])
        try:
            msg = protocol.decode(frames[1:], max_bytes=self.limits.max_message_bytes)
        except ProtocolError as exc:
            self._error(ident, "", exc.code, exc.message)
            return
        t, job = msg.type, msg.job
        if t == "hello":
            self._reply(ident, {"type": "hello", "job": job, "server": self.hello_info()})
        elif t == "ping":
            self._reply(ident, {"type": "ping", "job": job, "time": time.time()})
        elif t == "submit":
            self._submit(ident, msg)
        elif t == "cancel":
            self._cancel(job)
        elif t == "unload":
            self._enqueue(Job(id=job or protocol.new_job_id(), op="__unload__", params={},
                              blobs={}, client=ident), ident, control=True)
        else:
            self._error(ident, job, "BAD_INPUT", f"a client cannot send {t!r}")

    def _submit(self, ident: bytes, msg: protocol.Message) -> None:
        job_id, op = msg.job, msg.header.get("op")
        if not job_id:
            return self._error(ident, "", "BAD_INPUT", "submit needs a job id")
        rec = self.records.get(job_id)
        if rec is not None:  # a re-sent job (client reconnected): follow it, don't run it twice
            rec.job.client = ident
            if rec.final is not None:
                self._send([ident, *rec.final])
            return
        if not isinstance(op, str) or op not in OPS:
            return self._error(ident, job_id, "BAD_INPUT",
                               f"unknown op {op!r}; this backend runs {sorted(OPS)}")
        inflight = sum(1 for r in self.records.values()
                       if r.state != "done" and r.job.client == ident)
        if inflight >= self.limits.max_inflight_per_client:
            return self._error(ident, job_id, "BUSY",
                               f"{inflight} jobs of yours are already running; wait for them")
        job = Job(id=job_id, op=op, params=dict(msg.header.get("params", {})),
                  blobs=dict(msg.blobs), device=self.device, client=ident,
                  _progress=self._progress_from_worker)
        self._enqueue(job, ident)

    def _enqueue(self, job: Job, ident: bytes, control: bool = False) -> None:
        with self.cv:
            if not control and len(self.queue) >= self.limits.max_queue:
                return self._error(ident, job.id, "BUSY",
                                   f"the queue is full ({self.limits.max_queue} jobs); retry later")
            self.records[job.id] = Record(job)
            self.queue.append(job)
            self.cv.notify()
        log.info("job=%s op=%s queued (%d waiting)", job.id, job.op, len(self.queue))
        self._reply(ident, protocol.progress_header(job.id, 0.0, "queued", position=len(self.queue)))

    def _cancel(self, job_id: str) -> None:
        rec = self.records.get(job_id)
        if rec is None or rec.state == "done":
            return
        rec.job._cancel.set()
        with self.cv:
            if rec.job in self.queue:
                self.queue.remove(rec.job)
                self._finish(rec, protocol.encode(protocol.error_header(
                    job_id, "CANCELLED", "cancelled before it started")))
        log.info("job=%s cancel requested", job_id)

    def _finish(self, rec: Record, frames: list[Any]) -> None:
        rec.state, rec.done_at, rec.final = "done", time.monotonic(), frames
        self._send([rec.job.client, *frames])

    def _heartbeat(self) -> None:
        now = time.monotonic()
        for job_id, rec in list(self.records.items()):
            if rec.state == "done":
                if now - rec.done_at > 60.0:  # keep finals a minute for reconnecting clients
                    del self.records[job_id]
                continue
            self._reply(rec.job.client, protocol.progress_header(
                job_id, rec.value, rec.stage, heartbeat=True))

    def _from_worker(self) -> None:
        job_id, *frames = self.inbox.recv_multipart(copy=False)
        rec = self.records.get(bytes(job_id).decode())
        if rec is None:
            return
        hdr = protocol.decode(frames)
        if hdr.type == "progress":
            rec.state = "running"
            p = hdr.header["progress"]
            rec.value, rec.stage = p["value"], p["stage"]
            self._send([rec.job.client, *frames])
        else:
            self._finish(rec, frames)

    def serve_forever(self) -> int:
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        next_beat = time.monotonic() + HEARTBEAT_S
        log.info("listening on tcp://%s:%d device=%s pid=%d", self.cfg.host, self.port,
                 self.device, os.getpid())
        while not self.stopping.is_set():
            events = dict(poller.poll(200))
            if self.inbox in events:
                for _ in range(256):
                    self._from_worker()
                    if not self.inbox.poll(0):
                        break
            if self.front in events:
                for _ in range(256):
                    try:
                        frames = self.front.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._handle(frames)
                    except Exception:  # a bug must never take the service down
                        log.error("unexpected error handling a message:\n%s", traceback.format_exc())
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S
        return self._shutdown()

    def _shutdown(self) -> int:
        log.info("shutting down")
        with self.cv:
            pending = list(self.queue)
            self.queue.clear()
            self.cv.notify_all()
        for rec in self.records.values():
            if rec.state != "done":
                rec.job._cancel.set()
        self.worker.join(timeout=10.0)
        while self.inbox.poll(0):
            self._from_worker()
        for rec in self.records.values():
            if rec.state != "done" or rec.job in pending:
                self._finish(rec, protocol.encode(protocol.error_header(
                    rec.job.id, "SHUTDOWN", "the backend is shutting down; resubmit later")))
        time.sleep(0.05)  # let libzmq flush the SHUTDOWN replies before the sockets close
        self.front.close(linger=100)
        self.inbox.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        return 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    # -- worker thread ---------------------------------------------------------------------
    def _progress_from_worker(self, job: Job, value: float, stage: str, extra: dict | None,
                              blobs: dict | None) -> None:
        self._out.send_multipart([job.id.encode(), *protocol.encode(
            protocol.progress_header(job.id, value, stage, **(extra or {})), blobs)], copy=False)

    def _take_batch(self) -> list[Job]:
        with self.cv:
            while not self.queue and not self.stopping.is_set():
                self.cv.wait(0.5)
            if not self.queue:
                return []
            first = self.queue.popleft()
            batch = [first]
            spec = OPS.get(first.op)
            if spec is not None and spec.batch:
                deadline = time.monotonic() + self.limits.batch_wait_s
                while len(batch) < self.limits.max_batch:
                    same = [j for j in self.queue if j.op == first.op]
                    for j in same[: self.limits.max_batch - len(batch)]:
                        self.queue.remove(j)
                        batch.append(j)
                    left = deadline - time.monotonic()
                    if len(batch) >= self.limits.max_batch or left <= 0:
                        break
                    self.cv.wait(left)
            return batch

    def _work(self) -> None:
        out = self.ctx.socket(zmq.PUSH)  # only this thread uses it
        out.setsockopt(zmq.LINGER, 1000)
        out.connect(self.inbox_addr)
        self._out = out
        if self.cfg.preload:
            from . import reconstruct_op

            try:
                reconstruct_op.get_model()
            except JobError as exc:
                log.warning("model not loaded: %s", exc.message)
        while not self.stopping.is_set():
            batch = self._take_batch()
            if batch:
                self._run(batch, out)
        out.close()

    def _run(self, batch: list[Job], out: zmq.Socket) -> None:
        op = batch[0].op
        for job in batch:
            self._progress_from_worker(job, 0.01, "started", None, None)
        t0 = time.perf_counter()
        try:
            if op == "__unload__":
                from . import reconstruct_op

                results: list[Any] = [Output({"unloaded": reconstruct_op.unload()})]
            else:
                spec = OPS[op]
                if spec.batch:
                    results = spec.fn(batch, limits=self.limits.public())
                else:
                    results = [spec.fn(batch[0])]
        except JobError as exc:
            results = [exc] * len(batch)
        except Exception as exc:  # map runtime failures to coded errors, keep serving
            oom = "out of memory" in str(exc).lower() or exc.__class__.__name__.endswith("OutOfMemoryError")
            code = "OOM" if oom else "MODEL"
            log.error("op %s failed:\n%s", op, traceback.format_exc())
            results = [JobError(code, f"{op} failed: {exc.__class__.__name__}: {str(exc)[:300]}")] * len(batch)
            if oom:
                self._free_cuda()
        dt = time.perf_counter() - t0
        for job, res in zip(batch, results):
            if isinstance(res, JobError):
                hdr = protocol.error_header(job.id, res.code, res.message)
                frames = protocol.encode(hdr)
            else:
                hdr = {"type": "result", "job": job.id, "op": op, "meta": res.meta}
                frames = protocol.encode(hdr, res.blobs)
            out.send_multipart([job.id.encode(), *frames], copy=False)
            log.info("job=%s op=%s %s in %.3f s (batch %d)", job.id, op,
                     "failed " + res.code if isinstance(res, JobError) else "done", dt, len(batch))

    @staticmethod
    def _free_cuda() -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def serve(cfg: ServerConfig, ready_file: str | None = None) -> int:
    server = Server(cfg)
    signal.signal(signal.SIGINT, server.stop)
    signal.signal(signal.SIGTERM, server.stop)
    print(f"image2points {__version__} serving on tcp://{cfg.host}:{server.port} "
          f"(device {server.device}, protocol v{protocol.PROTOCOL_VERSION})", flush=True)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.port))
        os.replace(tmp, ready_file)
    return server.serve_forever()
