"""The server's front end as one worker of ``image2points broker`` (``serve --connect-broker``).

Instead of listening, it connects a DEALER to the broker's worker side, announces READY with a
number of slots, answers heartbeats, and gets every client message wrapped in the broker's
envelope (``worker_protocol.py``). Jobs, admission and the worker are the ordinary front end's.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import zmq
import zmq.auth

from .frontend import Frontend
from .worker_protocol import (
    LIVENESS_S,
    W_BYE,
    W_HEARTBEAT,
    W_MAGIC,
    W_READY,
    W_REPLY,
    W_REQUEST,
)

log = logging.getLogger("image2points.server")


class BrokerLink(Frontend):
    mode = "worker"

    def _open_front(self) -> zmq.Socket:
        self.broker_seen = time.monotonic()
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

    def _send(self, frames: list[Any]) -> None:
        super()._send([W_MAGIC, W_REPLY, *frames])

    def _owner(self, frames: list[Any]) -> bytes:
        return b""  # every message comes from the broker, which checked the owner itself

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

    def _on_frames(self, frames: list[Any]) -> None:
        if len(frames) < 2 or bytes(frames[0]) != W_MAGIC:
            return  # the broker is trusted code, but a stray peer is not
        self.broker_seen = time.monotonic()
        cmd = bytes(frames[1])
        if cmd == W_REQUEST and len(frames) >= 4:
            self._handle(frames[2:])  # [client_ident, *message]
        elif cmd == W_READY:  # the broker restarted and asks us to announce again
            self._announce()

    def _heartbeat(self) -> None:
        super()._heartbeat()
        self._to_broker(W_HEARTBEAT, {"queue": self.worker.queued(), "active": len(self.active)})

    def _started(self) -> None:
        self._announce()
        log.info("worker connected to broker %s device=%s pid=%d", self.cfg.connect_broker,
                 self.device, os.getpid())

    def _tick(self) -> None:
        """No heartbeat from the broker for LIVENESS_S: reconnect to it."""
        if time.monotonic() - self.broker_seen < LIVENESS_S:
            return
        log.warning("no heartbeat from the broker at %s for %.0f s; reconnecting",
                    self.cfg.connect_broker, LIVENESS_S)
        self._poller.unregister(self.front)
        self.front.close(linger=0)
        self.front = self._open_front()
        self._poller.register(self.front, zmq.POLLIN)
        self._announce()

    def _farewell(self) -> None:
        """The broker re-queues our unfinished jobs on another worker."""
        self._to_broker(W_BYE, {"jobs": list(self.active)})
