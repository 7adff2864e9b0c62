"""The Image2Points backend service: a ROUTER front end and one worker thread per device.

The front end (main thread) owns every socket and never runs a model, so hello/ping/cancel are
answered while a job computes. The worker takes jobs from a bounded FIFO queue (micro-batching
queued jobs of a batchable op into one call) and hands replies back over an inproc PUSH socket;
ZeroMQ sockets are not thread-safe, so no socket is shared between threads.

The same service can instead run as a worker behind ``image2points broker``
(``serve --connect-broker``): then the front socket is a DEALER connected to the broker and every
client message arrives wrapped in the broker's small envelope (see ``broker.py``).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

# Must precede the first torch import (the serve path imports torch only below, lazily):
# beside Blender on few cores, busy-waiting OpenMP threads slow torch 10-25x (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import zmq  # noqa: E402
import zmq.auth  # noqa: E402

from image2points.addon.core import protocol  # noqa: E402
from image2points.addon.core.protocol import ProtocolError  # noqa: E402

from . import __version__, logsafe  # noqa: E402
from .broker import (  # noqa: E402
    AUTO_ID,
    W_BYE,
    W_HEARTBEAT,
    W_MAGIC,
    W_READY,
    W_REPLY,
    W_REQUEST,
    KeptFinals,
    may_follow,
    owner_of,
    submit_digest,
)
from .image_header import image_size  # noqa: E402
from .logsafe import JsonFormatter, setup_logging  # noqa: E402,F401  (cli imports them from here)
from .ops import OPS, Job, JobError, Output, load_builtin_ops  # noqa: E402

log = logging.getLogger("image2points.server")

HEARTBEAT_S = 1.0  # progress heartbeat per unfinished job; clients treat ~5 s of silence as death
BROKER_LIVENESS_S = 3.0  # no heartbeat from the broker this long -> reconnect to it
SHUTDOWN_GRACE_S = 0.75  # keep answering this long after telling pending clients SHUTDOWN
WORKER_STOP_S = 1.0  # on a signal, how long a running job gets to notice its cancel
# Exit codes of `serve` (documented in docs/server.md): 0 after a clean stop (SIGTERM/SIGINT: every
# pending job was answered SHUTDOWN and the worker stopped); EXIT_ABANDONED when a running job
# ignored its cancel for WORKER_STOP_S and was abandoned (its client still got SHUTDOWN).
EXIT_ABANDONED = 3
# Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS as a decompression bomb; the front end
# refuses such header claims itself, so they never take a queue slot. Smaller images are the
# worker's (max_pixels is its working limit).
BOMB_PIXELS = 2 * 89_478_485


@dataclass
class Limits:
    max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES
    max_image_bytes: int = 64 << 20
    max_pixels: int = 4096 * 4096
    max_header_pixels: int = BOMB_PIXELS  # header claims above this are refused at admission
    max_points: int = 5_000_000
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
    client_cancelled: bool = False
    owner: bytes = b""  # owner_of() its submit: only the owner may re-send or cancel it
    digest: bytes = b""  # submit_digest() of its frames when the owner is an AUTO_ID


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


class Server:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.limits = cfg.limits
        self.worker_mode = cfg.connect_broker is not None
        if (not self.worker_mode and not is_loopback(cfg.host) and cfg.curve_secret is None
                and not cfg.insecure):
            raise SystemExit(
                f"refusing to listen on {cfg.host} without CurveZMQ: pass --curve-secret and "
                "--curve-clients (see 'image2points keys new'), or --insecure to accept the risk")
        if "torch" in sys.modules and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            log.warning("torch was imported before OMP_WAIT_POLICY=PASSIVE could be set")
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
            # numpy's OpenBLAS keeps its own pool and ignores torch's setting: on a loaded 2-core
            # machine a 3x3 transform of 75k points took 32 ms with it, 0.9 ms with one thread
            from threadpoolctl import threadpool_limits

            threadpool_limits(cfg.threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already fixed by an earlier parallel op; harmless
                pass
        self.device = resolve_device(cfg.device)
        load_builtin_ops()
        from . import reconstruct_op

        reconstruct_op.configure(self.device, cfg.checkpoint)
        reconstruct_op.status()  # imports the model code now, not in the first hello (0.5 s stall)
        self.ctx = zmq.Context()
        self.auth: Any = None
        self.started = time.time()
        self.rejected = 0  # malformed messages refused (counted, logged at DEBUG only)
        self.tally = logsafe.Tally(log)  # refusals, failures, ... by code; summarised at INFO
        self.throttle = logsafe.Throttle()  # tracebacks a client could trigger over and over
        self.exit_code = 0
        self.port = 0
        self.front = self._open_front()
        self.inbox_addr = f"inproc://replies-{id(self)}"
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(self.inbox_addr)
        self.records: dict[str, Record] = {}
        self.active: dict[str, Record] = {}  # not yet done (bounded by queue + batch)
        self.done = KeptFinals()  # finals a reconnecting client can get again (age/count/bytes)
        self.queue: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self._last_batch = 1  # size of the previous batch: a sign of concurrent clients
        self.stopping = threading.Event()
        self.broker_seen = time.monotonic()
        self.worker = threading.Thread(target=self._work, name="image2points-worker", daemon=True)

    # -- sockets ---------------------------------------------------------------------------
    def _open_front(self) -> zmq.Socket:
        if self.worker_mode:
            return self._open_broker_link()
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # a Client reconnects under its old routing id (it owns its jobs by it): the new
        # connection must take the id over even before the old one is noticed gone
        s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        s.setsockopt(zmq.SNDHWM, 10000)
        if self.cfg.curve_secret:
            self._setup_curve(s)
        if self.cfg.port == 0:
            self.port = s.bind_to_random_port(f"tcp://{self.cfg.host}")
        else:
            s.bind(f"tcp://{self.cfg.host}:{self.cfg.port}")
            self.port = self.cfg.port
        return s

    def _open_broker_link(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        s.setsockopt(zmq.SNDHWM, 10000)
        if self.cfg.curve_secret:

            if not self.cfg.broker_key:
                raise SystemExit("--connect-broker with --curve-secret also needs --broker-key")
            public, secret = zmq.auth.load_certificate(self.cfg.curve_secret)
            server_public, _ = zmq.auth.load_certificate(self.cfg.broker_key)
            if not secret:
                raise SystemExit(f"{self.cfg.curve_secret} holds no secret key")
            s.curve_secretkey, s.curve_publickey, s.curve_serverkey = secret, public, server_public
        s.connect(str(self.cfg.connect_broker))
        return s

    def _setup_curve(self, sock: zmq.Socket) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(str(self.cfg.curve_secret))
        if not secret:
            raise SystemExit(f"{self.cfg.curve_secret} holds no secret key")
        if not self.cfg.curve_clients or not os.path.isdir(self.cfg.curve_clients):
            raise SystemExit("--curve-clients must be a directory of allowed client .key files")
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("image2points.auth"))
        self.auth.start()
        self.auth.configure_curve(domain="*", location=self.cfg.curve_clients)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    # -- front end -------------------------------------------------------------------------
    def hello_info(self) -> dict[str, Any]:
        from . import reconstruct_op

        return {
            "name": "image2points", "version": __version__, "protocol": protocol.PROTOCOL_VERSION,
            "device": self.device, "pid": os.getpid(), "ops": sorted(OPS),
            "model": reconstruct_op.status(), "limits": self.limits.public(),
            "queue": len(self.queue), "running": len(self.active) - len(self.queue),
            "curve": self.cfg.curve_secret is not None, "memory": free_memory(self.device),
            "threads": self.cfg.threads, "mode": "worker" if self.worker_mode else "server",
            "uptime_s": round(time.time() - self.started, 1), "rejected": self.rejected,
            "stats": self.tally.totals(), "log_dropped": logsafe.dropped(),
        }

    def _reply(self, ident: bytes, header: dict[str, Any], blobs: dict | None = None) -> None:
        self._send([ident, *protocol.encode(header, blobs)])

    def _send(self, frames: list[Any]) -> None:
        """``[client_ident, *message]`` out through the ROUTER, or wrapped for the broker."""
        if self.worker_mode:
            frames = [W_MAGIC, W_REPLY, *frames]
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

    def _handle(self, frames: list[Any]) -> None:
        ident = bytes(frames[0])
        try:
            msg = protocol.decode(frames[1:], max_bytes=self.limits.max_message_bytes)
        except ProtocolError as exc:
            self.rejected += 1
            self._error(ident, exc.job, exc.code, exc.message)
            return
        except RecursionError:  # absurdly nested JSON
            self.rejected += 1
            self._error(ident, "", "BAD_INPUT", "header nests too deeply")
            return
        t, job = msg.type, msg.job
        # behind a broker every message comes from the broker, which checked the owner itself
        owner = b"" if self.worker_mode else owner_of(frames, self.cfg.curve_secret is not None)
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
            self._enqueue(Job(id=job_id, op="__unload__", params={}, blobs={}, client=ident),
                          ident, owner, control=True)
        else:
            self._error(ident, job, "BAD_INPUT", f"a client cannot send {t!r}")

    def _admission_error(self, msg: protocol.Message) -> tuple[str, str] | None:
        """Cheap checks in the front end, so work that cannot succeed never takes a queue slot:
        required blobs, point and byte limits, and the pixels an image header claims."""
        spec = OPS[msg.header["op"]]
        for name in spec.requires:
            if name not in msg.blobs:
                return "BAD_INPUT", f"{spec.name} needs a blob named {name!r}; the request has none"
        params = msg.header.get("params", {})
        n = params.get("max_points") if isinstance(params, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > self.limits.max_points:
            return "TOO_LARGE", f"max_points {n} exceeds this server's limit {self.limits.max_points}"
        for d in msg.header.get("blobs", []):
            media = str(d.get("media", ""))
            if not media.startswith("image/"):
                continue
            if d["nbytes"] > self.limits.max_image_bytes:
                return "TOO_LARGE", (f"image {d['name']!r} is {d['nbytes'] >> 20} MB; the limit is "
                                     f"{self.limits.max_image_bytes >> 20} MB")
            size = image_size(msg.blobs[d["name"]])
            limit = max(self.limits.max_header_pixels, self.limits.max_pixels)
            if size is not None and size.pixels > limit:
                return "TOO_LARGE", (f"image {d['name']!r} claims {size.width}x{size.height} pixels "
                                     f"({size.format} header); the limit is {limit} pixels. "
                                     "Scale it down first.")
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
        if not isinstance(op, str) or op not in OPS:
            return self._error(ident, job_id, "BAD_INPUT",
                               f"unknown op {op!r}; this backend runs {sorted(OPS)}")
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
                  _progress=self._progress_from_worker)
        self._enqueue(job, ident, owner,
                      digest=submit_digest(frames) if owner.startswith(AUTO_ID) else b"")

    def _enqueue(self, job: Job, ident: bytes, owner: bytes, control: bool = False,
                 digest: bytes = b"") -> None:
        with self.cv:
            if not control and len(self.queue) >= self.limits.max_queue:
                return self._error(ident, job.id, "BUSY",
                                   f"the queue is full ({self.limits.max_queue} jobs); retry later")
            rec = Record(job, owner=owner, digest=digest)
            self.records[job.id] = self.active[job.id] = rec
            self.queue.append(job)
            position = len(self.queue)
            self.cv.notify()
        log.debug("job=%s op=%s queued (%d waiting)", job.id, job.op, position,
                  extra={"job": job.id, "op": job.op})
        self._reply(ident, protocol.progress_header(job.id, 0.0, "queued", position=position))

    def _cancel(self, job_id: str, owner: bytes) -> None:
        rec = self.active.get(job_id)
        if rec is None or rec.owner != owner:
            return
        rec.client_cancelled = True
        rec.job._cancel.set()  # a running job stops at its next check_cancel()
        with self.cv:
            queued = rec.job in self.queue
            if queued:
                self.queue.remove(rec.job)
        if queued:
            self._finish(rec, protocol.encode(protocol.error_header(
                job_id, "CANCELLED", "cancelled before it started")))
        self.tally.add("cancelled", "queued" if queued else "running")
        log.debug("job=%s cancel requested (%s)", job_id, "was queued" if queued else "running",
                  extra={"job": job_id})

    def _finish(self, rec: Record, frames: list[Any]) -> None:
        if rec.state == "done":
            return
        rec.state, rec.done_at, rec.final = "done", time.monotonic(), frames
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
        if self.worker_mode:
            self._to_broker(W_HEARTBEAT, self._worker_status())

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

    # -- broker link (worker mode) ---------------------------------------------------------
    def _worker_status(self) -> dict[str, Any]:
        return {"queue": len(self.queue), "active": len(self.active)}

    def _to_broker(self, cmd: bytes, body: dict[str, Any]) -> None:
        try:
            self.front.send_multipart([W_MAGIC, cmd, json.dumps(body).encode()], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.tally.add("replies", "dropped")
            log.debug("broker message dropped: %s", exc.strerror)

    def _announce(self) -> None:
        info = self.hello_info()
        info["slots"] = max(1, min(self.limits.max_queue, 2 * self.limits.max_batch))
        self._to_broker(W_READY, info)
        self.broker_seen = time.monotonic()

    def _from_broker(self, frames: list[Any]) -> None:
        if len(frames) < 2 or bytes(frames[0]) != W_MAGIC:
            return  # the broker is trusted code, but a stray peer is not
        self.broker_seen = time.monotonic()
        cmd = bytes(frames[1])
        if cmd == W_REQUEST and len(frames) >= 4:
            self._handle(frames[2:])  # [client_ident, *message]
        elif cmd == W_READY:  # the broker restarted and asks us to announce again
            self._announce()

    def _check_broker(self) -> None:
        if time.monotonic() - self.broker_seen < BROKER_LIVENESS_S:
            return
        log.warning("no heartbeat from the broker at %s for %.0f s; reconnecting",
                    self.cfg.connect_broker, BROKER_LIVENESS_S)
        self._poller.unregister(self.front)
        self.front.close(linger=0)
        self.front = self._open_broker_link()
        self._poller.register(self.front, zmq.POLLIN)
        self._announce()

    # -- main loop -------------------------------------------------------------------------
    def serve_forever(self) -> int:
        self.worker.start()
        poller = self._poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        if self.worker_mode:
            self._announce()
            log.info("worker connected to broker %s device=%s pid=%d", self.cfg.connect_broker,
                     self.device, os.getpid())
        else:
            log.info("listening on tcp://%s:%d device=%s pid=%d", self.cfg.host, self.port,
                     self.device, os.getpid())
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
                        if self.worker_mode:
                            self._from_broker(frames)
                        else:
                            self._handle(frames)
                    except Exception as exc:  # a bug must never take the service down
                        self._log_bug("handling a message", exc)
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S
            if self.worker_mode:
                self._check_broker()
        return self._shutdown()

    def _shutdown(self) -> int:
        """Bounded, whatever the jobs or the log output do: a running job gets WORKER_STOP_S to
        notice its cancel, every pending client gets SHUTDOWN, then SHUTDOWN_GRACE_S of answering
        before the socket closes. Returns the exit code (see EXIT_ABANDONED)."""
        log.info("shutting down")
        with self.cv:
            self.queue.clear()
            self.cv.notify_all()
        for rec in self.active.values():
            rec.job._cancel.set()
        # meanwhile results that finish are delivered (and, as a server, pings answered and new
        # submits told SHUTDOWN); behind a broker, unread requests are re-queued by the broker
        end = time.monotonic() + WORKER_STOP_S
        while self.worker.is_alive() and time.monotonic() < end:
            self._pump(0.05, front=not self.worker_mode)
        stuck = self.worker.is_alive()
        while not stuck and self.inbox.poll(0):
            self._from_worker()
        if self.worker_mode:  # the broker re-queues our unfinished jobs on another worker
            self._to_broker(W_BYE, {"jobs": list(self.active)})
        else:
            for rec in list(self.active.values()):
                self._finish(rec, protocol.encode(protocol.error_header(
                    rec.job.id, "SHUTDOWN", "the backend is shutting down; resubmit later")))
            end = time.monotonic() + SHUTDOWN_GRACE_S
            while time.monotonic() < end:
                self._pump(0.05, front=True, inbox=False)
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
            self._log_bug("while shutting down", exc)

    def _log_bug(self, where: str, exc: BaseException) -> None:
        """Call in an ``except``: a bug must not take the service down, and a client that can
        trigger it over and over must not fill the log with its traceback."""
        self.tally.add("bugs", exc.__class__.__name__)
        if self.throttle.allow((where, exc.__class__.__name__)):
            log.error("unexpected error %s (logged once per %.0f s, all counted):\n%s", where,
                      self.throttle.every_s, traceback.format_exc())

    def stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT (again and again, too): a clean stop, bounded in time."""
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
        if self.cfg.preload:
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
                    self._log_bug("in the worker", exc)
        out.close()

    def _run(self, batch: list[Job], out: zmq.Socket) -> None:
        op = batch[0].op
        live: list[Job] = []
        for job in batch:  # cancelled between the queue and here: don't start it
            if job.cancelled():
                self._send_final(out, job, op, JobError("CANCELLED", "cancelled by the client"), 0.0, 0)
            else:
                live.append(job)
                self._progress_from_worker(job, 0.01, "started", None, None)
        if not live:
            return
        t0 = time.perf_counter()
        results: list[Any]
        try:
            if op == "__unload__":
                from . import reconstruct_op

                results = [Output({"unloaded": reconstruct_op.unload()})]
                self._free_cuda()
            else:
                spec = OPS[op]
                if spec.batch:
                    results = list(spec.fn(live, limits=self.limits.public()))
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


def serve(cfg: ServerConfig, ready_file: str | None = None) -> int:
    server = Server(cfg)
    signal.signal(signal.SIGINT, server.stop)
    signal.signal(signal.SIGTERM, server.stop)
    where = (f"as a worker of {cfg.connect_broker}" if cfg.connect_broker
             else f"on tcp://{cfg.host}:{server.port}")
    print(f"image2points {__version__} serving {where} "
          f"(device {server.device}, protocol v{protocol.PROTOCOL_VERSION})", flush=True)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.port))
        os.replace(tmp, ready_file)
    return leave(server.serve_forever())


def leave(code: int) -> int:
    """End the process with ``code``, now: give the log writer a bounded moment, then
    ``os._exit``. Why not a normal return: the interpreter's teardown with torch loaded took
    1.5 s here (SIGTERM must end the service within 3 s), and it would wait on a job that ignored
    its cancel or on a log writer stuck on a stream nobody reads. Sockets are closed by now."""
    logsafe.stop()
    # whatever else sits in stdio buffers, in a thread: that stream may be a full, unread pipe
    flusher = threading.Thread(target=_flush_stdio, daemon=True)
    flusher.start()
    flusher.join(0.1)
    os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
