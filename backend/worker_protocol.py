"""What the broker and the server share: the worker link's frames, job ownership, kept finals.

Why one module (zguide's Majordomo keeps its ``mdp`` definitions apart the same way): the broker
and a ``serve --connect-broker`` worker are two ends of one protocol, and both front ends decide
who owns a job and how long a final reply is kept by the same rules. Neither side imports the
other. No torch here.

Worker link (DEALER -> broker ROUTER), every message starts with ``W_MAGIC, command``:
  worker -> broker: READY json | HB json | REPLY client_ident *message | BYE json
  broker -> worker: REQ client_ident *message | HB | READY (please announce again)
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.auth

from image2points.addon.core import protocol
from image2points.addon.core.protocol import ProtocolError

W_MAGIC = b"I2PW1"
W_READY = b"READY"
W_HEARTBEAT = b"HB"
W_REQUEST = b"REQ"
W_REPLY = b"REPLY"
W_BYE = b"BYE"

HEARTBEAT_S = 1.0  # progress heartbeats to clients, and heartbeats on the worker link
LIVENESS_S = 3.0  # a peer on the worker link silent this long is gone (3 missed heartbeats)
SHUTDOWN_GRACE_S = 0.75  # keep answering this long after telling pending clients SHUTDOWN
FINAL_KEEP_S = 60.0
FINAL_KEEP_MAX = 1024
FINAL_KEEP_BYTES = 512 << 20  # results are up to hundreds of MB: a count alone does not bound memory


class KeptFinals:
    """The job ids whose final reply is kept (so a reconnecting client gets it again), oldest
    first, bounded by age, count and bytes; ``expire`` says which to forget."""

    def __init__(self, keep_s: float = FINAL_KEEP_S, max_count: int = FINAL_KEEP_MAX,
                 max_bytes: int = FINAL_KEEP_BYTES):
        self.keep_s, self.max_count, self.max_bytes = keep_s, max_count, max_bytes
        self._kept: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, job_id: str, frames: list[Any]) -> None:
        n = sum(memoryview(getattr(f, "buffer", f)).nbytes for f in frames)
        self._kept[job_id] = (time.monotonic(), n)
        self.nbytes += n

    def expire(self) -> list[str]:
        now, gone = time.monotonic(), []
        while self._kept:
            job_id, (t, n) = next(iter(self._kept.items()))
            if (now - t <= self.keep_s and len(self._kept) <= self.max_count
                    and self.nbytes <= self.max_bytes):
                break
            self._kept.popitem(last=False)
            self.nbytes -= n
            gone.append(job_id)
        return gone


def owner_of(frames: list[Any], curve: bool) -> bytes:
    """Who may re-send or cancel a job. Job ids show up in logs and screenshots, so they cannot be
    the capability: under CURVE the owner is the client's key (the same after a new socket or a
    restarted Blender), else the ROUTER routing id, which a Client keeps across reconnects."""
    if curve:
        try:
            return b"key:" + str(frames[-1].get("User-Id")).encode()
        except (zmq.ZMQError, AttributeError):  # no metadata: fall back to the connection
            pass
    return b"id:" + bytes(frames[0])


AUTO_ID = b"id:\x00"  # how owner_of() names a peer libzmq named itself (5 bytes, first 0)


def submit_digest(frames: list[Any]) -> bytes:
    """A fingerprint of a submit's frames, kept only for jobs whose owner is an AUTO_ID."""
    h = hashlib.blake2b(digest_size=16)
    for f in frames:
        b = memoryview(f)
        h.update(b.nbytes.to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def digest_for(owner: bytes, frames: list[Any]) -> bytes:
    """What a new job keeps for ``may_follow``: the digest only when the owner is an AUTO_ID."""
    return submit_digest(frames) if owner.startswith(AUTO_ID) else b""


def may_follow(kept_owner: bytes, kept_digest: bytes, owner: bytes, frames: list[Any]) -> bool:
    """May this re-sent submit follow the job kept under the same id?

    Its owner must match, with one exception. ROUTER_HANDOVER gives a reconnecting client's
    routing id to its new connection at once and renames the old connection to an AUTO_ID, so a
    submit still unread on the old connection arrives under that name. Such a job may be followed
    by whoever re-sends byte-identical frames (its random job id and its whole content), which is
    what the reconnected client does; a stranger knowing the job id alone cannot.
    """
    if kept_owner == owner:
        return True
    return kept_owner.startswith(AUTO_ID) and kept_digest != b"" and \
        kept_digest == submit_digest(frames)


def read_request(frames: list[Any], max_bytes: int) -> protocol.Message | ProtocolError:
    """A client's ``[ident, *message]`` decoded, or the coded refusal to answer it with."""
    try:
        return protocol.decode(frames[1:], max_bytes=max_bytes)
    except ProtocolError as exc:
        return exc
    except RecursionError:  # absurdly nested JSON
        return ProtocolError("BAD_INPUT", "header nests too deeply")


def is_loopback(host: str) -> bool:
    if host in {"localhost", "127.0.0.1", "::1"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(endpoint: str) -> str:
    return urlsplit(endpoint).hostname or ""


def refuse_open_bind(where: str, host: str, curve: bool, insecure: bool, how: str) -> None:
    """Ironhouse by default: a non-loopback bind needs CURVE unless ``--insecure`` says so."""
    if not is_loopback(host) and not curve and not insecure:
        raise SystemExit(f"refusing to listen on {where} without CurveZMQ: {how}, or --insecure "
                         "to accept the risk")


def curve_server(ctx: zmq.Context, auth: Any, sock: zmq.Socket, secret_file: str,
                 allow_dir: str, domain: str | None = None) -> Any:
    """Make ``sock`` a CURVE server that admits only the public keys in ``allow_dir``; returns the
    (started, shared) authenticator. ``domain`` None: the one allow-list of the whole context."""
    from zmq.auth.thread import ThreadAuthenticator

    public, secret = zmq.auth.load_certificate(secret_file)
    if not secret:
        raise SystemExit(f"{secret_file} holds no secret key")
    if auth is None:
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("image2points.auth"))
        auth.start()
    auth.configure_curve(domain=domain or "*", location=allow_dir)
    if domain is not None:
        sock.zap_domain = domain.encode()
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True
    return auth
