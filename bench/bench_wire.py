"""Point payloads over the project's protocol vs a bare pyzmq multipart of the same bytes."""

from __future__ import annotations

import numpy as np
import zmq

from image2points.addon.core import protocol

from .timing import measure_pair, table


def run(quick: bool = False) -> dict:
    ctx = zmq.Context()
    rx = ctx.socket(zmq.ROUTER)
    port = rx.bind_to_random_port("tcp://127.0.0.1")
    tx = ctx.socket(zmq.DEALER)
    tx.setsockopt(zmq.LINGER, 0)
    tx.connect(f"tcp://127.0.0.1:{port}")
    tx.send(b"hi")
    rx.recv_multipart()  # connection up before timing
    sizes = {"1.5 MB": 100_000, "15 MB": 1_000_000, "60 MB": 4_000_000}
    if quick:
        sizes = {"0.15 MB": 10_000}
    rng = np.random.default_rng(0)
    rows, out = [], {}
    for label, n in sizes.items():
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        raw = [xyz.tobytes(), rgb.tobytes()]

        # sub-millisecond transfers: time a loop of `inner` of them per sample (>= ~20 MB moved),
        # so timer resolution and scheduler noise do not decide the ratio
        inner = max(1, 20_000_000 // (xyz.nbytes + rgb.nbytes))

        def bare() -> None:
            for _ in range(inner):
                tx.send_multipart([b"h", *raw], copy=False)
                frames = rx.recv_multipart(copy=False)
                np.frombuffer(frames[2].buffer, np.float32)

        def ours() -> None:
            for _ in range(inner):
                tx.send_multipart(protocol.encode({"type": "result", "job": "b"},
                                                  {"xyz": xyz, "rgb": rgb}), copy=False)
                frames = rx.recv_multipart(copy=False)
                msg = protocol.decode(frames[1:])
                assert msg.blobs["xyz"].shape == (n, 3)

        reps = 7 if not quick else 3
        s_bare, s_ours = (s.per(inner) for s in measure_pair(bare, ours, reps))
        ratio = s_ours.median / s_bare.median
        mbps = (xyz.nbytes + rgb.nbytes) / s_ours.median / 1e6
        rows.append((label, s_bare.ms(), s_ours.ms(), f"{ratio:.2f}x", f"{mbps:.0f} MB/s"))
        out[label] = {"points": n, "bare": s_bare.as_dict(), "protocol": s_ours.as_dict(),
                      "overhead_ratio": ratio}
    tx.close()
    rx.close(linger=0)
    ctx.term()
    print(table("wire: protocol vs bare pyzmq (goal <= 1.2x)", rows,
                ("payload", "bare pyzmq", "protocol", "ratio", "throughput")))
    return out
