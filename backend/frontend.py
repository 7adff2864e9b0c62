"""The server's front end: the ROUTER socket, admission, limits, CURVE auth, job records.

It runs in the main thread, owns every socket but the worker's own, and never runs a model, so
hello/ping/cancel are answered while a job computes. Work that cannot succeed (an unknown op, a
missing blob, a bomb-sized image header, a full queue) is refused here before it takes a queue
slot; the rest goes to the ``Worker``, whose replies come back over an inproc socket.
``broker_link.py`` is the same front end as a worker behind ``image2points broker``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from image2points.addon.core import protocol
from image2points.addon.core.protocol import ProtocolError

from . import __version__, logsafe
from .image_header import image_size
from .limits import Limits, check_image
from .ops import Job, JobError
from .worker import UNLOAD, Worker, free_memory
from .worker_protocol import (
    HEARTBEAT_S,
    SHUTDOWN_GRACE_S,
    KeptFinals,
    curve_server,
    digest_for,
    may_follow,
    owner_of,
    read_request,
    refuse_open_bind,
)

log = logging.getLogger("image2points.server")

WORKER_STOP_S = 1.0  # on a signal, how long a running job gets to notice its cancel
# Exit codes of `serve` (documented in docs/server.md): 0 after a clean stop (SIGTERM/SIGINT: every
# pending job was answered SHUTDOWN and the worker stopped); EXIT_ABANDONED when a running job
# ignored its cancel for WORKER_STOP_S and was abandoned (its client still got SHUTDOWN).
EXIT_ABANDONED = 3


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
    connect_broker: str | None = None  # tcp://host:port of a broker's worker side
    broker_key: str | None = None  # the broker's public .key file (CURVE to the broker)
    limits: Limits = field(default_factory=Limits)


@dataclass
class Record:
    job: Job
    state: str = "queued"  # queued | running | done
    value: float = 0.0
    stage: str = "queued"
    final: list[Any] | None = None  # last frames, re-sent to a reconnecting client
    client_cancelled: bool = False
    owner: bytes = b""  # owner_of() its submit: only the owner may re-send or cancel it
    digest: bytes = b""  # submit_digest() of its frames when the owner is an AUTO_ID


def check_bind(cfg: ServerConfig) -> None:
    """Before anything heavy starts: a non-loopback listener needs CURVE or ``--insecure``."""
    if cfg.connect_broker is None:
        refuse_open_bind(cfg.host, cfg.host, cfg.curve_secret is not None, cfg.insecure,
                         "pass --curve-secret and --curve-clients (see 'image2points keys new')")


class Frontend:
    mode = "server"

    def __init__(self, cfg: ServerConfig, ctx: zmq.Context, worker: Worker):
        self.cfg, self.ctx, self.worker = cfg, ctx, worker
        self.limits, self.ops, self.device = worker.limits, worker.ops, worker.device
        self.tally, self.throttle = worker.tally, worker.throttle
        self.stopping = worker.stopping  # set by a signal: the worker stops taking jobs at once
        self.auth: Any = None
        self.started = time.time()
        self.rejected = 0  # malformed messages refused (counted, logged at DEBUG only)
        self.exit_code = 0
        self.port = 0
        self.front = self._open_front()
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(worker.inbox_addr)
        self.records: dict[str, Record] = {}
        self.active: dict[str, Record] = {}  # not yet done (bounded by queue + batch)
        self.done = KeptFinals()  # finals a reconnecting client can get again (age/count/bytes)

    # -- sockets ---------------------------------------------------------------------------
    def _open_front(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # a Client reconnects under its old routing id (it owns its jobs by it): the new
        # connection must take the id over even before the old one is noticed gone
        s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        s.setsockopt(zmq.SNDHWM, 10000)
        if self.cfg.curve_secret:
            if not self.cfg.curve_clients or not os.path.isdir(self.cfg.curve_clients):
                raise SystemExit("--curve-clients must be a directory of allowed client .key files")
            self.auth = curve_server(self.ctx, None, s, self.cfg.curve_secret, self.cfg.curve_clients)
        if self.cfg.port == 0:
            self.port = s.bind_to_random_port(f"tcp://{self.cfg.host}")
        else:
            s.bind(f"tcp://{self.cfg.host}:{self.cfg.port}")
            self.port = self.cfg.port
        return s

    # -- messages --------------------------------------------------------------------------
    def hello_info(self) -> dict[str, Any]:
        queued = self.worker.queued()
        return {
            "name": "image2points", "version": __version__, "protocol": protocol.PROTOCOL_VERSION,
            "device": self.device, "pid": os.getpid(), "ops": sorted(self.ops),
            "model": self.worker.model_status(), "limits": self.limits.public(),
            "queue": queued, "running": len(self.active) - queued,
            "curve": self.cfg.curve_secret is not None, "memory": free_memory(self.device),
            "threads": self.cfg.threads, "mode": self.mode,
            "uptime_s": round(time.time() - self.started, 1), "rejected": self.rejected,
            "stats": self.tally.totals(), "log_dropped": logsafe.dropped(),
        }

    def _reply(self, ident: bytes, header: dict[str, Any], blobs: dict | None = None) -> None:
        self._send([ident, *protocol.encode(header, blobs)])

    def _send(self, frames: list[Any]) -> None:
        """``[client_ident, *message]`` out through the front socket."""
        try:
            self.front.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or its queue full
            self.tally.add("replies", "dropped")
            log.debug("reply dropped: %s", exc.strerror)

    def _error(self, ident: bytes, job: str, code: str, message: str) -> None:
        """A refusal: per message at DEBUG only, counted for the INFO summary and ``hello``."""
        self.tally.add("refused", code)
        log.debug("job=%s error %s: %s", job or "-", code, message, extra={"job": job, "code": code})
        self._reply(ident, protocol.error_header(job, code, message))

    def _owner(self, frames: list[Any]) -> bytes:
        return owner_of(frames, self.cfg.curve_secret is not None)

    def _handle(self, frames: list[Any]) -> None:
        ident = bytes(frames[0])
        msg = read_request(frames, self.limits.max_message_bytes)
        if isinstance(msg, ProtocolError):
            self.rejected += 1
            return self._error(ident, msg.job, msg.code, msg.message)
        t, job = msg.type, msg.job
        owner = self._owner(frames)
        if t == "hello":
            self._reply(ident, {"type": "hello", "job": job, "server": self.hello_info()})
        elif t == "ping":
            self._reply(ident, {"type": "ping", "job": job, "time": time.time()})
        elif t == "submit":
            self._submit(ident, msg, owner, frames[1:])
        elif t == "cancel":
            self._cancel(job, owner)
        elif t == "unload":
            job_id = job or protocol.new_job_id()
            if job_id in self.records:
                return
            self._enqueue(Job(id=job_id, op=UNLOAD, params={}, blobs={}, client=ident),
                          ident, owner, control=True)
        else:
            self._error(ident, job, "BAD_INPUT", f"a client cannot send {t!r}")

    def _admission_error(self, msg: protocol.Message) -> tuple[str, str] | None:
        """Cheap checks, so work that cannot succeed never takes a queue slot: required blobs,
        point and byte limits, and the pixels an image header claims."""
        spec = self.ops[msg.header["op"]]
        for name in spec.requires:
            if name not in msg.blobs:
                return "BAD_INPUT", f"{spec.name} needs a blob named {name!r}; the request has none"
        params = msg.header.get("params", {})
        n = params.get("max_points") if isinstance(params, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > self.limits.max_points:
            return "TOO_LARGE", f"max_points {n} exceeds this server's limit {self.limits.max_points}"
        for d in msg.header.get("blobs", []):
            if not str(d.get("media", "")).startswith("image/"):
                continue
            size = image_size(msg.blobs[d["name"]])  # type: ignore[arg-type]  # media: bytes
            try:
                check_image(f"image {d['name']!r}", d["nbytes"],
                            (size.width, size.height) if size else None,
                            self.limits.max_image_bytes, self.limits.admission_pixels(),
                            f" (as its {size.format} header claims)" if size else "")
            except JobError as exc:
                return exc.code, exc.message
        return None

    def _submit(self, ident: bytes, msg: protocol.Message, owner: bytes,
                frames: list[Any]) -> None:
        job_id, op = msg.job, msg.header.get("op")
        if not job_id:
            return self._error(ident, "", "BAD_INPUT", "submit needs a job id")
        if self.stopping.is_set() and job_id not in self.records:
            return self._error(ident, job_id, "SHUTDOWN", "the backend is shutting down; "
                               "resubmit later")
        rec = self.records.get(job_id)
        if rec is not None and not may_follow(rec.owner, rec.digest, owner, frames):
            return self._error(ident, job_id, "BAD_INPUT",  # as if there were no such job
                               f"unknown job {job_id!r}; submit new work under a fresh job id")
        if rec is not None:  # a re-sent job (client reconnected): follow it, don't run it twice
            rec.job.client, rec.owner = ident, owner
            log.debug("job=%s re-sent by its client; following it (%s)", job_id, rec.state,
                      extra={"job": job_id})
            if rec.final is not None:
                self._send([ident, *rec.final])
            else:
                self._reply(ident, protocol.progress_header(job_id, rec.value, rec.stage))
            return
        if not isinstance(op, str) or op not in self.ops:
            return self._error(ident, job_id, "BAD_INPUT",
                               f"unknown op {op!r}; this backend runs {sorted(self.ops)}")
        refused = self._admission_error(msg)
        if refused is not None:
            return self._error(ident, job_id, *refused)
        inflight = sum(1 for r in self.active.values() if r.job.client == ident)
        if inflight >= self.limits.max_inflight_per_client:
            return self._error(ident, job_id, "BUSY",
                               f"{inflight} jobs of yours are already queued or running (limit "
                               f"{self.limits.max_inflight_per_client}); wait for them")
        job = Job(id=job_id, op=op, params=dict(msg.header.get("params", {})),
                  blobs=dict(msg.blobs), device=self.device, client=ident,
                  _progress=self.worker.progress)
        self._enqueue(job, ident, owner, digest=digest_for(owner, frames))

    def _enqueue(self, job: Job, ident: bytes, owner: bytes, control: bool = False,
                 digest: bytes = b"") -> None:
        position = self.worker.put(job, control)  # its replies come through this thread
        if position is None:
            return self._error(ident, job.id, "BUSY",
                               f"the queue is full ({self.limits.max_queue} jobs); retry later")
        self.records[job.id] = self.active[job.id] = Record(job, owner=owner, digest=digest)
        log.debug("job=%s op=%s queued (%d waiting)", job.id, job.op, position,
                  extra={"job": job.id, "op": job.op})
        self._reply(ident, protocol.progress_header(job.id, 0.0, "queued", position=position))

    def _cancel(self, job_id: str, owner: bytes) -> None:
        rec = self.active.get(job_id)
        if rec is None or rec.owner != owner:
            return
        rec.client_cancelled = True
        rec.job._cancel.set()  # a running job stops at its next check_cancel()
        queued = self.worker.remove(rec.job)
        if queued:
            self._finish(rec, protocol.encode(protocol.error_header(
                job_id, "CANCELLED", "cancelled before it started")))
        self.tally.add("cancelled", "queued" if queued else "running")
        log.debug("job=%s cancel requested (%s)", job_id, "was queued" if queued else "running",
                  extra={"job": job_id})

    def _finish(self, rec: Record, frames: list[Any]) -> None:
        if rec.state == "done":
            return
        rec.state, rec.final = "done", frames
        self.active.pop(rec.job.id, None)
        rec.job.blobs = {}  # the inputs are no longer needed; keep only the final reply
        self.done.add(rec.job.id, frames)
        self._send([rec.job.client, *frames])
        self._expire_finals()

    def _expire_finals(self) -> None:
        for job_id in self.done.expire():
            self.records.pop(job_id, None)

    def _heartbeat(self) -> None:
        self.tally.maybe_log()
        self._expire_finals()
        for job_id, rec in list(self.active.items()):
            self._reply(rec.job.client, protocol.progress_header(
                job_id, rec.value, rec.stage, heartbeat=True))

    def _from_worker(self) -> None:
        job_id, *frames = self.inbox.recv_multipart(copy=False)
        rec = self.active.get(bytes(job_id).decode())
        if rec is None:
            return
        head = json.loads(bytes(frames[0].buffer))  # our own encoder wrote it
        if (self.stopping.is_set() and head.get("type") == "error"
                and head["error"]["code"] == "CANCELLED" and not rec.client_cancelled):
            return  # stopped by our shutdown, not by its client: it gets SHUTDOWN below
        if head.get("type") == "progress":
            rec.state = "running"
            p = head["progress"]
            rec.value, rec.stage = p["value"], p["stage"]
            self._send([rec.job.client, *frames])
        else:
            self._finish(rec, frames)

    # -- main loop -------------------------------------------------------------------------
    def _started(self) -> None:
        log.info("listening on tcp://%s:%d device=%s pid=%d", self.cfg.host, self.port,
                 self.device, os.getpid())

    def _on_frames(self, frames: list[Any]) -> None:
        self._handle(frames)

    def _tick(self) -> None:
        """Called on every turn of the loop."""

    def serve_forever(self) -> int:
        self.worker.thread.start()
        poller = self._poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        self._started()
        next_beat = time.monotonic() + HEARTBEAT_S
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
                        self._on_frames(frames)
                    except Exception as exc:  # a bug must never take the service down
                        logsafe.log_bug(log, self.tally, self.throttle, "handling a message", exc)
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S
            self._tick()
        return self._shutdown()

    def _shutdown(self) -> int:
        """Bounded, whatever the jobs or the log output do: a running job gets WORKER_STOP_S to
        notice its cancel, every pending client gets SHUTDOWN, then SHUTDOWN_GRACE_S of answering
        before the socket closes. Returns the exit code (see EXIT_ABANDONED)."""
        log.info("shutting down")
        self.worker.stop()
        for rec in self.active.values():
            rec.job._cancel.set()
        # meanwhile results that finish are delivered (and, as a server, pings answered and new
        # submits told SHUTDOWN); behind a broker, unread requests are re-queued by the broker
        end = time.monotonic() + WORKER_STOP_S
        while self.worker.thread.is_alive() and time.monotonic() < end:
            self._pump(0.05, front=self.mode == "server")
        stuck = self.worker.thread.is_alive()
        while not stuck and self.inbox.poll(0):
            self._from_worker()
        self._farewell()
        self.tally.maybe_log(force=True)
        self.front.close(linger=250)  # flush the SHUTDOWN replies, bounded
        self.inbox.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        if stuck:  # its PUSH socket is still open: ctx.term() would wait for it forever
            log.warning("a running job did not stop within %.1f s of its cancel; exiting without "
                        "it (exit code %d)", WORKER_STOP_S, EXIT_ABANDONED)
            self.exit_code = EXIT_ABANDONED
            return self.exit_code
        self.ctx.term()
        return self.exit_code

    def _farewell(self) -> None:
        """Every unfinished job's client gets SHUTDOWN, and a moment to read it."""
        for rec in list(self.active.values()):
            self._finish(rec, protocol.encode(protocol.error_header(
                rec.job.id, "SHUTDOWN", "the backend is shutting down; resubmit later")))
        end = time.monotonic() + SHUTDOWN_GRACE_S
        while time.monotonic() < end:
            self._pump(0.05, front=True, inbox=False)

    def _pump(self, seconds: float, front: bool, inbox: bool = True) -> None:
        """Handle what arrives within ``seconds`` while shutting down.

        Why: a client DEALER with IMMEDIATE=1 discards messages it has not read yet when the
        connection drops, so closing right after the SHUTDOWN replies could lose them.
        """
        poller = zmq.Poller()
        if inbox:
            poller.register(self.inbox, zmq.POLLIN)
        if front:
            poller.register(self.front, zmq.POLLIN)
        events = dict(poller.poll(int(seconds * 1000)))
        try:
            while self.inbox in events and self.inbox.poll(0):
                self._from_worker()
            for _ in range(256 if self.front in events else 0):
                self._handle(self.front.recv_multipart(copy=False, flags=zmq.NOBLOCK))
        except zmq.Again:
            pass
        except Exception as exc:
            logsafe.log_bug(log, self.tally, self.throttle, "while shutting down", exc)

    def stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT (again and again, too): a clean stop, bounded in time."""
        self.stopping.set()
