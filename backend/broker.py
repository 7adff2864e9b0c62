"""``image2points broker``: one client endpoint in front of many worker processes.

Why: one worker per GPU (or per host) behind a single address the artists' Blender points at.
It is the zguide load-balancing broker with Paranoid-Pirate liveness: workers (``image2points
serve --connect-broker``) connect to the back end, announce READY with a number of slots, and send
heartbeats; the broker gives each client job to the ready worker with the most free slots (least
recently used on ties; several slots per worker keep micro-batching alive), forwards progress and
results back by job id, and when a worker goes silent for ``LIVENESS_S`` it re-queues that
worker's jobs once (a second loss answers a coded error). Clients speak the ordinary protocol.

The worker link's frames and the ownership rules are in ``worker_protocol.py``, which the
worker side (``serve --connect-broker``) imports too. No torch here: the broker is cheap and can run on a host without a GPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.auth

from image2points.addon.core import protocol
from image2points.addon.core.protocol import ProtocolError

from . import __version__, logsafe
from .worker_protocol import (
    HEARTBEAT_S,
    LIVENESS_S,
    SHUTDOWN_GRACE_S,
    W_BYE,
    W_HEARTBEAT,
    W_MAGIC,
    W_READY,
    W_REPLY,
    W_REQUEST,
    KeptFinals,
    curve_server,
    digest_for,
    host_of,
    may_follow,
    owner_of,
    read_request,
    refuse_open_bind,
)

MAX_ATTEMPTS = 2  # a job is run at most twice: once, and once more after its worker died
NO_WORKER_TIMEOUT_S = 30.0  # a job queued this long while no worker is connected fails (BUSY)

log = logging.getLogger("image2points.broker")


@dataclass
class BrokerConfig:
    frontend: str = "tcp://127.0.0.1:5555"
    backend: str = "tcp://127.0.0.1:5556"
    insecure: bool = False
    curve_secret: str | None = None
    curve_clients: str | None = None
    curve_workers: str | None = None  # required with CURVE, and disjoint from curve_clients
    max_queue: int = 256
    max_inflight_per_client: int = 32
    max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES
    no_worker_timeout_s: float = NO_WORKER_TIMEOUT_S


@dataclass
class Worker:
    ident: bytes
    info: dict[str, Any]
    slots: int
    seen: float
    jobs: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.slots - len(self.jobs)


@dataclass
class BJob:
    id: str
    client: bytes
    frames: list[Any]  # the client's message, kept to re-send it to another worker
    worker: bytes | None = None
    attempts: int = 0
    value: float = 0.0
    stage: str = "queued"
    final: list[Any] | None = None
    queued_at: float = field(default_factory=time.monotonic)
    owner: bytes = b""  # owner_of() its submit: only the owner may re-send or cancel it
    digest: bytes = b""  # submit_digest() of its frames when the owner is an AUTO_ID


def _check_key_dirs(clients: str | None, workers: str | None) -> None:
    """A worker sees every job's images and answers for them, so an artist's key must not be
    able to register as one: CURVE needs a workers allow-list of its own, sharing no key."""
    for flag, d in (("--curve-clients", clients), ("--curve-workers", workers)):
        if not d or not os.path.isdir(d):
            raise SystemExit(f"CURVE needs {flag}: a directory of allowed .key files (clients and "
                             "workers each have their own, so a client key cannot serve jobs)")
    assert clients is not None and workers is not None
    both = set(zmq.auth.load_certificates(clients)) & set(zmq.auth.load_certificates(workers))
    if both:
        raise SystemExit(f"{len(both)} key(s) are allowed both as client ({clients}) and as "
                         f"worker ({workers}); give clients and workers separate key pairs")


class Broker:
    def __init__(self, cfg: BrokerConfig):
        self.cfg = cfg
        for ep in (cfg.frontend, cfg.backend):
            refuse_open_bind(ep, host_of(ep), bool(cfg.curve_secret), cfg.insecure,
                             "pass --curve-secret and --curve-clients")
        if cfg.curve_secret:
            _check_key_dirs(cfg.curve_clients, cfg.curve_workers)
        self.ctx = zmq.Context()
        self.auth: Any = None
        self.front = self._router("clients", cfg.curve_clients)
        # a Client reconnects under its old routing id (it owns its jobs by it): the new
        # connection must take the id over even before the old one is noticed gone
        self.front.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.back = self._router("workers", cfg.curve_workers)
        self.front_ep = self._bind(self.front, cfg.frontend)
        self.back_ep = self._bind(self.back, cfg.backend)
        self.workers: collections.OrderedDict[bytes, Worker] = collections.OrderedDict()
        self.jobs: dict[str, BJob] = {}
        self.pending: collections.deque[str] = collections.deque()
        self.done = KeptFinals()
        self.no_workers_since = time.monotonic()  # None while a worker is connected
        self.stopping = False
        self.rejected = 0
        self.tally = logsafe.Tally(log)  # refusals and dropped replies by code, summarised at INFO
        self.throttle = logsafe.Throttle()  # tracebacks a client could trigger over and over

    def _router(self, domain: str, allow_dir: str | None) -> zmq.Socket:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.SNDHWM, 10000)
        s.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_message_bytes)
        if self.cfg.curve_secret:
            if not allow_dir or not os.path.isdir(allow_dir):
                raise SystemExit(f"CURVE for {domain} needs a directory of allowed .key files")
            self.auth = curve_server(self.ctx, self.auth, s, self.cfg.curve_secret, allow_dir, domain)
        return s

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str) -> str:
        if endpoint.endswith(":0"):
            endpoint = endpoint[:-2] + ":*"
        sock.bind(endpoint)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- replies ---------------------------------------------------------------------------
    def _send(self, sock: zmq.Socket, frames: list[Any]) -> bool:
        """False when the peer is gone (ROUTER_MANDATORY) or its queue is full."""
        try:
            sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            if sock is self.front:
                self.tally.add("replies", "dropped")
                log.debug("reply dropped: %s", exc.strerror)
            return False

    def _reply(self, ident: bytes, header: dict[str, Any], blobs: dict | None = None) -> None:
        self._send(self.front, [ident, *protocol.encode(header, blobs)])

    def _error(self, ident: bytes, job: str, code: str, message: str) -> None:
        """A refusal: per message at DEBUG only, counted for the INFO summary and ``hello``."""
        self.tally.add("refused", code)
        log.debug("job=%s error %s: %s", job or "-", code, message, extra={"job": job, "code": code})
        self._reply(ident, protocol.error_header(job, code, message))

    def hello_info(self) -> dict[str, Any]:
        workers = [{"id": w.ident.hex(), "busy": len(w.jobs), "slots": w.slots,
                    "age_s": round(time.monotonic() - w.seen, 1),
                    **{k: w.info.get(k) for k in ("device", "pid", "model", "memory", "version",
                                                  "threads", "queue")}}
                   for w in self.workers.values()]
        ops = sorted({op for w in self.workers.values() for op in w.info.get("ops", [])})
        model = workers[0]["model"] if workers else {"state": "missing", "error": "no workers"}
        return {"name": "image2points", "mode": "broker", "version": __version__,
                "protocol": protocol.PROTOCOL_VERSION, "device": f"broker ({len(workers)} workers)",
                "workers": workers, "ops": ops, "model": model, "queue": len(self.pending),
                "running": sum(len(w.jobs) for w in self.workers.values()),
                "limits": {"max_queue": self.cfg.max_queue,
                           "max_inflight_per_client": self.cfg.max_inflight_per_client,
                           "max_message_bytes": self.cfg.max_message_bytes},
                "curve": self.cfg.curve_secret is not None, "rejected": self.rejected,
                "stats": self.tally.totals(), "log_dropped": logsafe.dropped(), "pid": os.getpid()}

    # -- clients ---------------------------------------------------------------------------
    def _from_client(self, frames: list[Any]) -> None:
        ident = bytes(frames[0])
        msg = read_request(frames, self.cfg.max_message_bytes)
        if isinstance(msg, ProtocolError):
            self.rejected += 1
            return self._error(ident, msg.job, msg.code, msg.message)
        t, job_id = msg.type, msg.job
        owner = owner_of(frames, self.cfg.curve_secret is not None)
        if t == "hello":
            self._reply(ident, {"type": "hello", "job": job_id, "server": self.hello_info()})
        elif t == "ping":
            self._reply(ident, {"type": "ping", "job": job_id, "time": time.time()})
        elif t == "submit":
            self._submit(ident, job_id, frames[1:], owner)
        elif t == "cancel":
            self._cancel(job_id, frames[1:], owner)
        elif t == "unload":
            for w in self.workers.values():
                self._send(self.back, [w.ident, W_MAGIC, W_REQUEST, b"", *frames[1:]])
            self._reply(ident, {"type": "result", "job": job_id, "op": "unload",
                                "meta": {"workers": len(self.workers)}})
        else:
            self._error(ident, job_id, "BAD_INPUT", f"a client cannot send {t!r}")

    def _submit(self, ident: bytes, job_id: str, msg_frames: list[Any], owner: bytes) -> None:
        if not job_id:
            return self._error(ident, "", "BAD_INPUT", "submit needs a job id")
        if self.stopping:
            return self._error(ident, job_id, "SHUTDOWN", "the broker is shutting down")
        job = self.jobs.get(job_id)
        if job is not None and not may_follow(job.owner, job.digest, owner, msg_frames):
            return self._error(ident, job_id, "BAD_INPUT",  # as if there were no such job
                               f"unknown job {job_id!r}; submit new work under a fresh job id")
        if job is not None:  # re-sent after a client reconnect: follow the job, don't run it twice
            job.client, job.owner = ident, owner
            if job.final is not None:
                self._send(self.front, [ident, *job.final])
            else:
                self._reply(ident, protocol.progress_header(job_id, job.value, job.stage))
            return
        if len(self.pending) >= self.cfg.max_queue:
            return self._error(ident, job_id, "BUSY",
                               f"the broker queue is full ({self.cfg.max_queue} jobs); retry later")
        mine = sum(1 for j in self.jobs.values() if j.final is None and j.client == ident)
        if mine >= self.cfg.max_inflight_per_client:
            return self._error(ident, job_id, "BUSY", f"{mine} jobs of yours are already queued "
                               f"or running (limit {self.cfg.max_inflight_per_client})")
        self.jobs[job_id] = BJob(job_id, ident, list(msg_frames), owner=owner,
                                 digest=digest_for(owner, msg_frames))
        self.pending.append(job_id)
        log.debug("job=%s queued at the broker (%d waiting, %d workers)", job_id, len(self.pending),
                  len(self.workers), extra={"job": job_id})
        self._reply(ident, protocol.progress_header(job_id, 0.0, "queued", position=len(self.pending)))

    def _cancel(self, job_id: str, msg_frames: list[Any], owner: bytes) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.final is not None or job.owner != owner:
            return
        if job.worker is None:
            try:
                self.pending.remove(job_id)
            except ValueError:
                pass
            self._finish(job, protocol.encode(protocol.error_header(
                job_id, "CANCELLED", "cancelled before it started")))
        else:
            self._send(self.back, [job.worker, W_MAGIC, W_REQUEST, job.client, *msg_frames])

    def _finish(self, job: BJob, frames: list[Any]) -> None:
        job.final, job.frames = frames, []
        if job.worker is not None and job.worker in self.workers:
            self.workers[job.worker].jobs.discard(job.id)
        self.done.add(job.id, frames)
        self._send(self.front, [job.client, *frames])
        for job_id in self.done.expire():
            self.jobs.pop(job_id, None)

    # -- workers ---------------------------------------------------------------------------
    def _from_worker(self, frames: list[Any]) -> None:
        if len(frames) < 3 or bytes(frames[1]) != W_MAGIC:
            return
        ident, cmd = bytes(frames[0]), bytes(frames[2])
        w = self.workers.get(ident)
        if cmd == W_READY:
            info = _json(frames[3]) if len(frames) > 3 else {}
            slots = info.get("slots", 1)
            slots = slots if isinstance(slots, int) and 0 < slots <= 1024 else 1
            if w is None:
                w = self.workers[ident] = Worker(ident, info, slots, time.monotonic())
                log.info("worker %s ready (pid %s, device %s, %d slots)", ident.hex(),
                         info.get("pid"), info.get("device"), slots, extra={"worker": ident.hex()})
            w.info, w.slots, w.seen = info, slots, time.monotonic()
            return
        if w is None:  # we restarted, or declared it dead too early: ask it to announce again
            self._send(self.back, [ident, W_MAGIC, W_READY])
            return
        w.seen = time.monotonic()
        if cmd == W_HEARTBEAT:
            if len(frames) > 3:
                w.info.update(_json(frames[3]))
        elif cmd == W_REPLY and len(frames) >= 5:
            self._worker_reply(w, frames[4:])
        elif cmd == W_BYE:
            log.info("worker %s left", ident.hex(), extra={"worker": ident.hex()})
            self._drop_worker(w, "stopped")

    def _worker_reply(self, w: Worker, msg: list[Any]) -> None:
        head = _json(msg[0])
        job = self.jobs.get(str(head.get("job", "")))
        if job is None or job.final is not None or job.worker != w.ident:
            return  # unload acks, or a late answer for a job that moved on
        if head.get("type") == "progress":
            p = head.get("progress", {})
            job.value, job.stage = float(p.get("value", 0.0)), str(p.get("stage", ""))
            self._send(self.front, [job.client, *msg])
        elif head.get("type") in {"result", "error"}:
            error = head.get("error")
            if isinstance(error, dict):  # a worker's code: from the fixed list, or "other"
                code = error.get("code")
                self.tally.add("failed", code if code in protocol.ERROR_CODES else "other")
            else:
                self.tally.add("done", "jobs")
            self._finish(job, msg)

    def _drop_worker(self, w: Worker, why: str) -> None:
        self.workers.pop(w.ident, None)
        for job_id in sorted(w.jobs):
            job = self.jobs.get(job_id)
            if job is None or job.final is not None:
                continue
            job.worker = None
            if job.attempts >= MAX_ATTEMPTS:
                self._finish(job, protocol.encode(protocol.error_header(
                    job_id, "MODEL", f"the worker running this job {why} twice (it may crash the "
                    "backend); not retrying. Check the backend logs.")))
                continue
            log.warning("job=%s re-queued: its worker %s %s", job_id, w.ident.hex(), why,
                        extra={"job": job_id})
            self.pending.appendleft(job_id)
            self._reply(job.client, protocol.progress_header(job_id, 0.0, "re-queued (worker lost)"))

    def _dispatch(self) -> None:
        while self.pending and self.workers:
            w = max(self.workers.values(), key=lambda x: x.free)  # first max = least recently used
            if w.free <= 0:
                return
            job = self.jobs.get(self.pending.popleft())
            if job is None or job.final is not None:
                continue
            job.worker, job.attempts = w.ident, job.attempts + 1
            w.jobs.add(job.id)
            self.workers.move_to_end(w.ident)
            if not self._send(self.back, [w.ident, W_MAGIC, W_REQUEST, job.client, *job.frames]):
                job.attempts -= 1  # it never reached the worker: not a real attempt
                self._drop_worker(w, "disconnected")

    def _tick(self) -> None:
        self.tally.maybe_log()
        now = time.monotonic()
        for w in list(self.workers.values()):
            if now - w.seen > LIVENESS_S:
                log.warning("worker %s silent for %.1f s: dead", w.ident.hex(), now - w.seen,
                            extra={"worker": w.ident.hex()})
                self._drop_worker(w, "stopped responding")
            elif not self._send(self.back, [w.ident, W_MAGIC, W_HEARTBEAT]):
                log.warning("worker %s disconnected", w.ident.hex(), extra={"worker": w.ident.hex()})
                self._drop_worker(w, "disconnected")
        self._fail_without_workers(now)
        for job_id in self.pending:
            job = self.jobs[job_id]
            self._reply(job.client, protocol.progress_header(job_id, job.value, job.stage,
                                                             heartbeat=True))
        for job_id in self.done.expire():
            self.jobs.pop(job_id, None)

    def _fail_without_workers(self, now: float) -> None:
        """Heartbeats keep a queued job alive on the client for as long as it waits, so with no
        worker at all it would wait its whole timeout for nothing: after ``no_worker_timeout_s``
        without workers (and in the queue) a job fails with a coded error that says why."""
        if self.workers:
            self.no_workers_since = None
            return
        if self.no_workers_since is None:
            self.no_workers_since = now
        limit = self.cfg.no_worker_timeout_s
        for job_id in list(self.pending):
            job = self.jobs[job_id]
            if now - max(job.queued_at, self.no_workers_since) > limit:
                self.pending.remove(job_id)
                self._finish(job, protocol.encode(protocol.error_header(
                    job_id, "BUSY", f"no backend workers have been connected to the broker for "
                    f"{limit:.0f} s; start one with: image2points serve --connect-broker "
                    f"{self.back_ep}")))

    # -- loop ------------------------------------------------------------------------------
    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        log.info("broker: clients on %s, workers on %s", self.front_ep, self.back_ep)
        next_tick = time.monotonic() + HEARTBEAT_S
        while not self.stopping:
            events = dict(poller.poll(200))
            for sock, handle in ((self.back, self._from_worker), (self.front, self._from_client)):
                if sock not in events:
                    continue
                for _ in range(256):
                    try:
                        frames = sock.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        handle(frames)
                    except Exception as exc:
                        self._log_bug(exc)
            self._dispatch()
            if time.monotonic() >= next_tick:
                self._tick()
                self._dispatch()
                next_tick = time.monotonic() + HEARTBEAT_S
        return self._shutdown()

    def _shutdown(self) -> int:
        """Bounded: every unfinished job gets SHUTDOWN, then SHUTDOWN_GRACE_S of answering (an
        IMMEDIATE client drops unread messages when the connection closes) before exiting."""
        log.info("shutting down")
        for job in list(self.jobs.values()):
            if job.final is None:
                self._finish(job, protocol.encode(protocol.error_header(
                    job.id, "SHUTDOWN", "the broker is shutting down; resubmit later")))
        end = time.monotonic() + SHUTDOWN_GRACE_S
        while time.monotonic() < end:
            if not self.front.poll(50):
                continue
            try:
                for _ in range(256):
                    self._from_client(self.front.recv_multipart(copy=False, flags=zmq.NOBLOCK))
            except zmq.Again:
                pass
            except Exception as exc:
                self._log_bug(exc)
        self.tally.maybe_log(force=True)
        self.front.close(linger=250)
        self.back.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        return 0

    def _log_bug(self, exc: BaseException) -> None:
        logsafe.log_bug(log, self.tally, self.throttle, "in the broker", exc)

    def stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT: a clean stop, bounded in time (exit code 0)."""
        self.stopping = True


def _json(frame: Any) -> dict[str, Any]:
    try:
        out = json.loads(bytes(getattr(frame, "buffer", frame)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return out if isinstance(out, dict) else {}


# -- CLI -----------------------------------------------------------------------------------
def cmd_broker(args: argparse.Namespace) -> int:
    logsafe.setup_logging(args.log_level, args.log_json)
    b = Broker(BrokerConfig(frontend=args.frontend, backend=args.backend, insecure=args.insecure,
                            curve_secret=args.curve_secret, curve_clients=args.curve_clients,
                            curve_workers=args.curve_workers, max_queue=args.max_queue,
                            no_worker_timeout_s=args.no_worker_timeout))
    signal.signal(signal.SIGINT, b.stop)
    signal.signal(signal.SIGTERM, b.stop)
    print(f"image2points broker {__version__}: clients -> {b.front_ep}, workers -> {b.back_ep}",
          flush=True)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            json.dump({"frontend": b.front_ep, "backend": b.back_ep}, f)
        os.replace(args.ready_file + ".tmp", args.ready_file)
    return logsafe.leave(b.run())


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("broker", help="load-balance clients over several 'serve' workers")
    s.add_argument("--frontend", default="tcp://127.0.0.1:5555", help="where clients connect")
    s.add_argument("--backend", default="tcp://127.0.0.1:5556",
                   help="where workers (serve --connect-broker) connect")
    s.add_argument("--curve-secret", default=None, help="broker .key_secret file (enables CURVE)")
    s.add_argument("--curve-clients", default=None, help="directory of allowed client .key files")
    s.add_argument("--curve-workers", default=None,
                   help="directory of allowed worker .key files (required with CURVE; no key "
                        "may be in both)")
    s.add_argument("--insecure", action="store_true", help="allow non-loopback binds without CURVE")
    s.add_argument("--max-queue", type=int, default=256)
    s.add_argument("--no-worker-timeout", type=float, default=NO_WORKER_TIMEOUT_S, metavar="S",
                   help="fail a queued job after this many seconds without any worker connected")
    s.add_argument("--ready-file", default=None, help="write the bound endpoints here (JSON)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    s.set_defaults(func=cmd_broker)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="image2points")
    register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["broker", *sys.argv[1:]])
    sys.exit(a.func(a))
