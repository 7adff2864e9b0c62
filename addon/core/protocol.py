"""The Image2Points wire format: the single source of truth for both ends.

A message is a ZeroMQ multipart: ``[header, *blobs]``. The header is UTF-8 JSON; every blob is
described in ``header["blobs"]`` (name, then either dtype + shape or a media type, and nbytes).
Nothing here imports bpy or zmq, so Blender, the backend and the tests share it directly.

Why not pickle: unpickling a frame runs arbitrary code from whoever sent it. JSON plus raw,
whitelisted dtypes cannot, and every length is checked before ``np.frombuffer`` sees a byte.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

PROTOCOL_VERSION = 1

MESSAGE_TYPES = frozenset(
    {"hello", "ping", "submit", "progress", "result", "error", "cancel", "unload"}
)

# Error codes a person can act on; the client adds the last two for failures it sees itself.
ERROR_CODES = frozenset(
    {
        "BAD_INPUT",
        "TOO_LARGE",
        "OOM",
        "MODEL",
        "BUSY",
        "CANCELLED",
        "SHUTDOWN",
        "VERSION",
        "UNREACHABLE",
        "TIMEOUT",
    }
)

# Only plain little-endian numeric types cross the wire; object dtypes could smuggle code.
DTYPES: dict[str, np.dtype] = {
    "<f4": np.dtype("<f4"),
    "<f2": np.dtype("<f2"),
    "|u1": np.dtype("|u1"),
    "<u2": np.dtype("<u2"),
    "<i4": np.dtype("<i4"),
}
MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/tiff", "application/octet-stream"})

MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 256 << 20  # a backend's default limit on one request
MAX_BLOBS = 512
MAX_NDIM = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_JOB_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

Blob = Union[np.ndarray, bytes, bytearray, memoryview]
Frame = Union[bytes, bytearray, memoryview, Any]  # zmq.Frame exposes .buffer


class ProtocolError(Exception):
    """A message that must be refused; ``code`` is one of ERROR_CODES.

    ``job`` is the refused message's job id when its header was read that far (else ""), so the
    reply reaches the request that is waiting for it instead of a timeout."""

    def __init__(self, code: str, message: str, job: str = ""):
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.job = job


@dataclass
class Message:
    header: dict[str, Any]
    blobs: dict[str, Blob] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.header["type"])

    @property
    def job(self) -> str:
        return str(self.header.get("job", ""))


def new_job_id() -> str:
    return uuid.uuid4().hex


def _as_bytes_view(frame: Frame) -> memoryview:
    buf = getattr(frame, "buffer", frame)  # zmq.Frame -> its zero-copy buffer
    return memoryview(buf).cast("B")


def describe_blob(name: str, blob: Blob, media: str | None = None) -> dict[str, Any]:
    if not _NAME_RE.match(name):
        raise ProtocolError("BAD_INPUT", f"blob name {name!r} is not allowed")
    if isinstance(blob, np.ndarray):
        dt = blob.dtype.newbyteorder("<") if blob.dtype.byteorder == ">" else blob.dtype
        key = dt.str if dt.str in DTYPES else None
        if key is None:
            raise ProtocolError("BAD_INPUT", f"dtype {blob.dtype} of blob {name!r} is not sendable")
        return {"name": name, "dtype": key, "shape": list(blob.shape), "nbytes": int(blob.nbytes)}
    nbytes = len(memoryview(blob).cast("B"))
    media = media or "application/octet-stream"
    if media not in MEDIA_TYPES:
        raise ProtocolError("BAD_INPUT", f"media type {media!r} is not allowed")
    return {"name": name, "media": media, "nbytes": nbytes}


def encode(
    header: Mapping[str, Any],
    blobs: Mapping[str, Blob] | None = None,
    media: Mapping[str, str] | None = None,
) -> list[Any]:
    """Header dict + named blobs -> frames ready for ``send_multipart(copy=False)``."""
    hdr = dict(header)
    hdr.setdefault("v", PROTOCOL_VERSION)
    descs, frames = [], []
    for name, blob in (blobs or {}).items():
        descs.append(describe_blob(name, blob, (media or {}).get(name)))
        if isinstance(blob, np.ndarray):
            arr = np.ascontiguousarray(blob, dtype=DTYPES[descs[-1]["dtype"]])
            frames.append(memoryview(arr).cast("B") if arr.size else b"")  # type: ignore[arg-type]
        else:
            frames.append(blob)  # type: ignore[arg-type]
    hdr["blobs"] = descs
    head = json.dumps(hdr, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return [head, *frames]


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise ProtocolError("BAD_INPUT", f"shape must be a list of at most {MAX_NDIM} sizes")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in shape):
        raise ProtocolError("BAD_INPUT", "shape entries must be non-negative integers")
    return tuple(shape)


def decode(frames: Sequence[Frame], max_bytes: int | None = None) -> Message:
    """Frames -> Message, refusing anything malformed before touching blob bytes.

    ``max_bytes`` caps the total blob payload (the sockets' MAXMSGSIZE caps each frame).
    """
    if not frames:
        raise ProtocolError("BAD_INPUT", "empty message")
    raw = _as_bytes_view(frames[0])
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("TOO_LARGE", f"header is {len(raw)} bytes (limit {MAX_HEADER_BYTES})")
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(
            "BAD_INPUT", f"header is not UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("BAD_INPUT", "header must be a JSON object")
    job = header.get("job", "")
    if job != "" and (not isinstance(job, str) or not _JOB_RE.match(job)):
        raise ProtocolError("BAD_INPUT", "job id must be 1-64 characters of [A-Za-z0-9_-]")
    try:
        return _decode_checked(header, frames, max_bytes)
    except ProtocolError as exc:
        exc.job = job
        raise


def _decode_checked(header: dict[str, Any], frames: Sequence[Frame],
                    max_bytes: int | None) -> Message:
    v = header.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:  # not True, which == 1
        raise ProtocolError(
            "VERSION",
            f"protocol version {v!r} is not supported; this side speaks "
            f"v{PROTOCOL_VERSION}. Update the add-on and the backend together.",
        )
    mtype = header.get("type")
    if not isinstance(mtype, str) or mtype not in MESSAGE_TYPES:
        raise ProtocolError("BAD_INPUT", f"unknown message type {mtype!r}")
    if "params" in header and not isinstance(header["params"], dict):
        raise ProtocolError("BAD_INPUT", "params must be a JSON object")
    descs = header.get("blobs", [])
    if not isinstance(descs, list) or len(descs) > MAX_BLOBS:
        raise ProtocolError("BAD_INPUT", "blobs must be a list of descriptors")
    if len(descs) != len(frames) - 1:
        raise ProtocolError(
            "BAD_INPUT", f"header describes {len(descs)} blobs but {len(frames) - 1} frames came"
        )
    declared = 0
    for d in descs:
        nbytes = d.get("nbytes") if isinstance(d, dict) else None
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ProtocolError("BAD_INPUT", "each blob needs a non-negative integer nbytes")
        declared += nbytes
    if max_bytes is not None and declared > max_bytes:
        raise ProtocolError("TOO_LARGE", f"payload of {declared} bytes exceeds {max_bytes}")

    blobs: dict[str, Blob] = {}
    for d, frame in zip(descs, frames[1:]):
        name = d.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in blobs:
            raise ProtocolError("BAD_INPUT", f"bad or duplicate blob name {name!r}")
        buf = _as_bytes_view(frame)
        if len(buf) != d["nbytes"]:
            raise ProtocolError(
                "BAD_INPUT", f"blob {name!r} declares {d['nbytes']} bytes but has {len(buf)}"
            )
        if "dtype" in d:
            dtype = DTYPES.get(d["dtype"]) if isinstance(d["dtype"], str) else None
            if dtype is None:
                raise ProtocolError("BAD_INPUT", f"dtype {d['dtype']!r} of {name!r} not allowed")
            shape = _check_shape(d.get("shape"))
            count = math.prod(shape)
            if count * dtype.itemsize != len(buf):
                raise ProtocolError(
                    "BAD_INPUT", f"blob {name!r}: shape {list(shape)} x {dtype} != {len(buf)} bytes"
                )
            blobs[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
        elif isinstance(d.get("media"), str) and d["media"] in MEDIA_TYPES:
            blobs[name] = buf
        else:
            raise ProtocolError("BAD_INPUT", f"blob {name!r} needs a dtype or an allowed media")
    return Message(header=header, blobs=blobs)


# -- helpers that build the common messages -------------------------------------------------


def error_header(job: str, code: str, message: str) -> dict[str, Any]:
    if code not in ERROR_CODES:
        code = "MODEL"
    return {"v": PROTOCOL_VERSION, "type": "error", "job": job,
            "error": {"code": code, "message": message}}


def progress_header(job: str, value: float, stage: str, **extra: Any) -> dict[str, Any]:
    value = float(min(1.0, max(0.0, value))) if math.isfinite(value) else 0.0
    return {"v": PROTOCOL_VERSION, "type": "progress", "job": job,
            "progress": {"value": value, "stage": str(stage)[:200], **extra}}


def require_array(
    msg: Message, name: str, dtype: str, shape: Iterable[int | None]
) -> np.ndarray:
    """Fetch a typed blob, checking dtype and shape (None = any size along that axis)."""
    arr = msg.blobs.get(name)
    if not isinstance(arr, np.ndarray):
        raise ProtocolError("BAD_INPUT", f"missing array blob {name!r}")
    want = list(shape)
    if arr.dtype != DTYPES[dtype] or arr.ndim != len(want) or any(
        w is not None and w != s for w, s in zip(want, arr.shape)
    ):
        raise ProtocolError(
            "BAD_INPUT", f"blob {name!r} must be {dtype} {want}, got {arr.dtype.str} {list(arr.shape)}"
        )
    return arr
