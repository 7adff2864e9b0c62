"""ZeroMQ DEALER client for the Image2Points backend. Pure Python, no bpy, no threads.

Blender polls a job with ``poll_job(job)`` (typed events: Progress, Done, Failed) from a modal
timer; scripts and background mode call ``wait()``, the same events in a blocking loop bounded by
a deadline (timers never fire there). libzmq does the
network I/O on its own C++ thread, so nothing here ever starts a Python thread.

Failures come in three kinds, each with its own code so the UI can say what to do:
``UNREACHABLE`` (no live connection: not started, crashed, wrong address/keys), ``TIMEOUT`` (the
backend is connected but the deadline passed) and the backend's own coded errors (BAD_INPUT,
TOO_LARGE, BUSY, MODEL, ...). ``BackendError.local`` tells the first two from the last.

Reconnect (Lazy Pirate): every submitted job's frames are kept until its result or error
arrives. ``reconnect()`` re-creates the socket and re-sends them with the same job ids, under the
same routing id (without CURVE, a backend lets only the connection that submitted a job follow or
cancel it; under CURVE, only its key); a backend that still knows a job (it de-duplicates by id)
just follows it or re-sends its final message, a restarted one runs it afresh. ``wait()`` does
this once by itself when the backend goes silent.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from . import protocol
from .protocol import Message, ProtocolError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
MAX_RESULT_BYTES = 1 << 30
MAX_BACKLOG = 1024  # final events kept for jobs that are not being waited on
LOCAL_CODES = frozenset({"UNREACHABLE", "TIMEOUT"})
# How long "no live connection" must last before wait() treats the backend as gone. Short, because
# a crashed backend's TCP connection is reset at once; a stalled-but-connected one is caught by
# wait()'s stall_timeout instead.
DISCONNECT_GRACE_S = 1.5


class BackendError(Exception):
    """A failure with a protocol error code and a message a person can act on."""

    def __init__(self, code: str, message: str, job: str = ""):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.job = job

    @property
    def local(self) -> bool:
        """True when this side saw the failure (no backend / too slow), not the backend."""
        return self.code in LOCAL_CODES


@dataclass
class CurveKeys:
    """Client side of CurveZMQ: the server's public key and our own key pair (Z85 strings)."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_files(cls, server_key_file: str, client_key_file: str) -> CurveKeys:
        """The server's public ``.key`` and our ``.key_secret`` (from ``image2points keys``).
        Raises ValueError with a clear text."""
        import zmq.auth

        try:
            server_public, _ = zmq.auth.load_certificate(server_key_file)
            client_public, client_secret = zmq.auth.load_certificate(client_key_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read CurveZMQ key files: {exc}") from None
        if client_secret is None:
            raise ValueError(f"{client_key_file} has no secret key (use the .key_secret file)")
        return cls(server_public, client_public, client_secret)


@dataclass
class JobResult:
    job: str
    header: dict[str, Any]
    blobs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray | None:
        """The object mask the backend used (uint8 HxW, 255 = object, at the decoded image's size),
        or None when the result carries none; a malformed one is a BackendError."""
        if "mask" not in self.blobs:
            return None
        try:
            return protocol.require_array(Message(self.header, self.blobs), "mask", "|u1", (None, None))
        except ProtocolError as exc:
            raise BackendError(exc.code, f"malformed result: {exc.message}", self.job) from None

    @property
    def warnings(self) -> list[dict[str, str]]:
        """Coded warnings ({"code", "message"}) about the result, e.g. MASK_SUSPECT; [] if none."""
        w = self.meta.get("warnings")
        return [d for d in w if isinstance(d, dict) and isinstance(d.get("message"), str)] \
            if isinstance(w, list) else []


@dataclass
class Event:
    """One message from the backend, as seen by a poller."""

    kind: str  # progress | result | error
    job: str
    message: Message
    # a final event of a job this client was still waiting for (not cancelled or forgotten)
    wanted: bool = False


@dataclass
class Progress:
    """Progress (or a heartbeat) of the job being polled."""

    value: float
    stage: str
    message: Message


@dataclass
class Done:
    """The job's result."""

    result: JobResult


@dataclass
class Failed:
    """The job's coded error (it is over)."""

    error: BackendError


JobEvent = Progress | Done | Failed


def _result(job: str, msg: Message) -> JobResult:
    return JobResult(job, msg.header, dict(msg.blobs), dict(msg.header.get("meta", {})))


def _error(job: str, msg: Message) -> BackendError:
    err = msg.header.get("error", {})
    return BackendError(str(err.get("code", "MODEL")), str(err.get("message", "")), job)


class Client:
    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        connect_timeout: float = 3.0,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ):
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.curve = curve
        self._own_ctx = context is None
        self.ctx = context or zmq.Context()
        self.sock: zmq.Socket | None = None
        # kept by every socket this client opens: the backend ties our jobs to it (not 0-led:
        # ZeroMQ reserves those ids for the ones it generates)
        self.routing_id = b"i2p-" + uuid.uuid4().bytes
        # job id -> frames, until its final message arrives (re-sent after a reconnect)
        self._pending: dict[str, list[Any]] = {}
        # final events for jobs nobody was waiting on yet, kept for the next poll/wait (bounded:
        # a script that submits and never collects must not grow without end)
        self._backlog: collections.deque[Event] = collections.deque(maxlen=MAX_BACKLOG)
        # the backend's limits, from hello(); a request over max_message_bytes is refused here,
        # since the backend's socket drops it without a word
        self.limits: dict[str, Any] = {}
        self._open()

    # -- socket lifecycle ------------------------------------------------------------------
    def _open(self) -> None:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer that is not there
        s.setsockopt(zmq.MAXMSGSIZE, MAX_RESULT_BYTES)
        s.setsockopt(zmq.RCVHWM, 0)
        # libzmq-level pings: a backend host that vanished without closing TCP is noticed too
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 4000)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        s.setsockopt(zmq.ROUTING_ID, self.routing_id)
        if self.curve is not None:
            s.curve_serverkey = self.curve.server_public
            s.curve_publickey = self.curve.client_public
            s.curve_secretkey = self.curve.client_secret
        s.connect(self.endpoint)
        self.sock = s

    def reconnect(self, resend: bool = True, timeout: float | None = None) -> bool:
        """Re-create the socket; with ``resend``, re-send unfinished jobs under their ids.

        Returns whether a live connection exists within ``timeout`` s (default
        ``connect_timeout``); jobs are re-sent only then (else they stay pending for next time).
        """
        if self.sock is not None:
            self.sock.close(linger=0)
        self._open()
        ok = self.connected(self.connect_timeout if timeout is None else timeout)
        if ok and resend:
            assert self.sock is not None
            for frames in self._pending.values():
                self.sock.send_multipart(frames, copy=False)
        return ok

    def connected(self, timeout: float = 0.0) -> bool:
        """Is there a live connection to the backend (waiting up to ``timeout`` s for one)?

        With IMMEDIATE=1, a DEALER is writable only while a connection (CURVE handshake done) exists.
        """
        return self.sock is not None and bool(self.sock.poll(int(timeout * 1000), zmq.POLLOUT))

    @property
    def pending_jobs(self) -> list[str]:
        return list(self._pending)

    def forget(self, job: str) -> None:
        """Stop tracking ``job`` (it will not be re-sent on reconnect)."""
        self._pending.pop(job, None)

    def close(self, linger: float = 0.0) -> None:
        """Close the socket; ``linger`` s lets a last message (a cancel) still go out."""
        if self.sock is not None:
            self.sock.close(linger=int(linger * 1000))
            self.sock = None
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------
    def _send(self, header: Mapping[str, Any], blobs: Mapping[str, Any] | None = None,
              media: Mapping[str, str] | None = None, timeout: float | None = None) -> list[Any]:
        assert self.sock is not None, "client is closed"
        try:
            frames = protocol.encode(header, blobs, media)
        except ProtocolError as exc:  # an unsendable dtype or media type
            raise BackendError(exc.code, exc.message) from None
        except (TypeError, ValueError) as exc:  # NaN/inf or a non-JSON value in the parameters
            raise BackendError("BAD_INPUT", f"request parameters are not plain JSON: {exc}") from None
        if len(frames[0]) > protocol.MAX_HEADER_BYTES:  # the backend could not even read its job id
            raise BackendError("TOO_LARGE", f"request parameters are {len(frames[0]) >> 10} KB of "
                               f"JSON; the limit is {protocol.MAX_HEADER_BYTES >> 10} KB. Send large "
                               "data as blobs")
        size = sum(memoryview(f).nbytes for f in frames)
        limit = int(self.limits.get("max_message_bytes") or protocol.DEFAULT_MAX_MESSAGE_BYTES)
        if size > limit:
            raise BackendError("TOO_LARGE", f"request is {size / 2**20:.0f} MB; the backend at "
                               f"{self.endpoint} accepts at most {limit / 2**20:.0f} MB. Use a smaller image")
        wait_ms = int(1000 * (self.connect_timeout if timeout is None else timeout))
        # With IMMEDIATE=1, POLLOUT only turns on once a connection to the backend exists.
        if not self.sock.poll(wait_ms, zmq.POLLOUT):
            raise BackendError(
                "UNREACHABLE",
                f"backend not reachable at {self.endpoint} (no connection within "
                f"{wait_ms / 1000:.1f} s). Start it with: image2points serve",
            )
        self.sock.send_multipart(frames, copy=False)
        return frames

    def submit(self, op: str, params: Mapping[str, Any] | None = None,
               blobs: Mapping[str, Any] | None = None, media: Mapping[str, str] | None = None,
               job: str | None = None) -> str:
        job = job or protocol.new_job_id()
        self._pending[job] = self._send(
            {"type": "submit", "job": job, "op": op, "params": dict(params or {})}, blobs, media)
        return job

    def cancel(self, job: str) -> None:
        self._pending.pop(job, None)
        try:
            self._send({"type": "cancel", "job": job}, timeout=0.2)
        except BackendError:
            pass  # nothing to cancel on a backend that is gone

    def unload(self) -> str:
        job = protocol.new_job_id()
        self._send({"type": "unload", "job": job})
        return job

    # -- receiving -------------------------------------------------------------------------
    def poll_events(self, timeout: float = 0.0, max_events: int = 64) -> list[Event]:
        """Kept events, then up to ``max_events`` messages from the socket (waiting up to
        ``timeout`` s for the first one when nothing was kept).

        The socket is read even when kept events fill a batch: otherwise waiting for one job
        while others' results pile up would never see its own."""
        assert self.sock is not None, "client is closed"
        events: list[Event] = list(self._backlog)
        self._backlog.clear()
        wait_ms = 0 if events else int(timeout * 1000)
        for _ in range(max_events):
            if not self.sock.poll(wait_ms, zmq.POLLIN):
                break
            wait_ms = 0
            frames = self.sock.recv_multipart(copy=False)
            try:
                msg = protocol.decode(frames, max_bytes=MAX_RESULT_BYTES)
            except ProtocolError as exc:
                msg = Message(protocol.error_header(exc.job, exc.code, f"bad reply: {exc.message}"))
            wanted = False
            if msg.type in ("result", "error"):
                wanted = self._pending.pop(msg.job, None) is not None
            events.append(Event(msg.type, msg.job, msg, wanted))
        return events

    def _stash(self, ev: Event) -> None:
        """Keep another job's final event for whoever polls or waits for it next; finals of
        jobs that were cancelled or forgotten are dropped (nobody will ask for them)."""
        if ev.kind in ("result", "error") and ev.job and ev.wanted:
            self._backlog.append(ev)

    def _orphan_error(self, ev: Event, job: str) -> bool:
        """An error the backend could not tie to a job (it could not read the request's job id)
        belongs to ``job`` when that is the only request in flight: raising it there beats
        waiting for a timeout with the real reason thrown away."""
        return ev.kind == "error" and not ev.job and set(self._pending) <= {job}

    def _lost(self, what: str) -> BackendError:
        return BackendError(
            "UNREACHABLE", f"backend at {self.endpoint} is not reachable ({what}). Is "
            "'image2points serve' running there, with matching keys?")

    def poll_job(self, job: str, timeout: float = 0.0) -> list[JobEvent]:
        """``job``'s events in order, ending at its Done or Failed (waiting up to ``timeout`` s for
        the first message). Other jobs' finals are kept for whoever polls or waits for them."""
        out: list[JobEvent] = []
        events = self.poll_events(timeout)
        for i, ev in enumerate(events):
            if ev.job != job and not self._orphan_error(ev, job):
                self._stash(ev)
                continue
            if ev.kind == "progress":
                p = ev.message.header.get("progress", {})
                out.append(Progress(float(p.get("value", 0.0)), str(p.get("stage", "")), ev.message))
                continue
            if ev.kind == "result":
                out.append(Done(_result(job, ev.message)))
            elif ev.kind == "error":
                self._pending.pop(job, None)  # an orphan error ends the job too
                out.append(Failed(_error(job, ev.message)))
            else:
                continue
            for later in events[i + 1:]:
                self._stash(later)
            break
        return out

    def _request(self, mtype: str, timeout: float) -> Message:
        job = protocol.new_job_id()
        t0 = time.monotonic()
        self._send({"type": mtype, "job": job}, timeout=timeout)
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if not self.connected():
                    raise self._lost(f"connection lost while waiting for {mtype}")
                raise BackendError("TIMEOUT", f"backend at {self.endpoint} did not answer "
                                   f"{mtype} within {timeout:.1f} s")
            events = self.poll_events(left)
            for i, ev in enumerate(events):
                if ev.job != job and not self._orphan_error(ev, job):
                    self._stash(ev)
                elif ev.kind in ("error", mtype):
                    for later in events[i + 1:]:
                        self._stash(later)
                    if ev.kind == "error":
                        raise _error(job, ev.message)
                    return ev.message

    def hello(self, timeout: float = 3.0) -> dict[str, Any]:
        """Server facts: version, protocol, device, model, limits (kept for the size check)."""
        info = dict(self._request("hello", timeout).header.get("server", {}))
        limits = info.get("limits")
        self.limits = dict(limits) if isinstance(limits, dict) else {}
        return info

    def ping(self, timeout: float = 3.0) -> float:
        t0 = time.perf_counter()
        self._request("ping", timeout)
        return time.perf_counter() - t0

    def wait(
        self,
        job: str,
        timeout: float = 300.0,
        stall_timeout: float = 10.0,
        on_progress: Callable[[float, str, Message], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        retries: int = 1,
    ) -> JobResult:
        """Block until ``job`` ends, never past ``timeout`` s. Raises BackendError.

        The backend sends progress or a heartbeat every second for every unfinished job, so
        ``stall_timeout`` s of silence (or a connection that stays down for a moment) means it
        died, not that the job is slow. Then the socket is re-created and the job re-sent under
        its id, up to ``retries`` times (a restarted backend runs it; one that kept running
        de-duplicates it); if that fails too, UNREACHABLE. Past the deadline: TIMEOUT, or
        UNREACHABLE when there is no connection at that moment.
        """
        deadline = time.monotonic() + timeout
        last_heard = time.monotonic()
        down_since: float | None = None
        while True:
            now = time.monotonic()
            if now > deadline:
                self.cancel(job)
                if not self.connected():
                    raise self._lost(f"connection lost; job not finished within {timeout:.0f} s")
                raise BackendError("TIMEOUT", f"job did not finish within {timeout:.0f} s", job)
            if should_cancel is not None and should_cancel():
                self.cancel(job)
                raise BackendError("CANCELLED", "cancelled by the user", job)
            if self.connected():
                down_since = None
            elif down_since is None:
                down_since = now
            silent = now - last_heard > stall_timeout
            gone = down_since is not None and now - down_since > DISCONNECT_GRACE_S
            if silent or gone:
                why = "connection lost" if gone else f"silent for {stall_timeout:.0f} s"
                if retries <= 0:
                    self.forget(job)
                    raise self._lost(f"{why}; stopped or crashed?")
                retries -= 1
                if job not in self._pending:
                    raise self._lost(f"{why}; the job cannot be re-sent")
                ok = self.reconnect(resend=True, timeout=min(self.connect_timeout,
                                                             max(0.0, deadline - time.monotonic())))
                if not ok:
                    self.forget(job)
                    raise self._lost(f"{why}, and no backend answered a reconnect")
                last_heard, down_since = time.monotonic(), None
                continue
            for jev in self.poll_job(job, min(0.25, max(0.0, deadline - now))):
                last_heard = time.monotonic()
                if isinstance(jev, Progress):
                    if on_progress is not None:
                        on_progress(jev.value, jev.stage, jev.message)
                elif isinstance(jev, Done):
                    return jev.result
                else:
                    raise jev.error


def points_from_result(res: JobResult) -> tuple[np.ndarray, np.ndarray]:
    """Checked (xyz float32 (N,3), rgb uint8 (N,3)) out of a reconstruct-like result."""
    msg = Message(res.header, res.blobs)
    try:
        xyz = protocol.require_array(msg, "xyz", "<f4", (None, 3))
        rgb = protocol.require_array(msg, "rgb", "|u1", (xyz.shape[0], 3))
    except ProtocolError as exc:
        raise BackendError(exc.code, f"malformed result: {exc.message}", res.job) from None
    if not np.isfinite(xyz).all():
        raise BackendError("BAD_INPUT", "result has non-finite coordinates", res.job)
    return xyz, rgb


def endpoint_error(endpoint: str) -> str:
    """Why ``endpoint`` cannot be connected to ('' when it can): caught before ZeroMQ raises."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return "" if len(endpoint.split("://", 1)[1]) else f"'{endpoint}' names no path"
    if not endpoint.startswith("tcp://"):
        return f"'{endpoint}' is not a ZeroMQ endpoint (expected tcp://HOST:PORT, e.g. {DEFAULT_ENDPOINT})"
    host, colon, port = endpoint[6:].rpartition(":")
    form = f"write tcp://HOST:PORT, e.g. {DEFAULT_ENDPOINT}"
    if not colon or not port:
        return f"'{endpoint}' has no port: {form}"
    if not host:
        return f"'{endpoint}' has no host: {form}"
    if not port.isdigit():
        return f"'{endpoint}': the port '{port}' is not a number: {form}"
    if not 0 < int(port) < 65536:
        return f"'{endpoint}': the port {int(port)} is out of range: ports are 1-65535 ({form})"
    if host in ("*", "0.0.0.0", "[::]"):
        return f"'{endpoint}' is an address to bind, not to connect to; use the backend's address"
    return ""


SUPPORTED_MEDIA = ("image/png", "image/jpeg", "image/webp")  # what the backend decodes


def guess_media(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"
