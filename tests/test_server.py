"""A real backend process on loopback: hello, ping, errors, cancel, shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from conftest import BackendProcess, example_image
from images import bomb_png, disc_rgba, png_bytes

from image2points.addon.core import protocol
from image2points.addon.core.client import BackendError, Client, points_from_result

ROOT = __import__("conftest").ROOT


def raw_request(endpoint: str, frames: list[bytes], timeout_ms: int = 5000) -> dict:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send_multipart(frames)
        assert s.poll(timeout_ms), "server did not answer"
        return json.loads(s.recv_multipart()[0])
    finally:
        s.close()


def test_hello_reports_the_service(backend):
    with Client(backend.endpoint) as c:
        info = c.hello()
        rtt = c.ping()
    assert info["protocol"] == protocol.PROTOCOL_VERSION
    assert info["device"] == "cpu"
    assert "reconstruct" in info["ops"]
    assert info["model"]["state"] in {"ready", "not loaded"}, info["model"]
    assert info["limits"]["max_queue"] > 0
    assert 0 < rtt < 5


@pytest.mark.parametrize("frames,code", [
    ([b"garbage"], "BAD_INPUT"),
    ([json.dumps({"v": 99, "type": "hello", "job": "x"}).encode()], "VERSION"),
    ([json.dumps({"v": 1, "type": "submit", "job": "x1", "op": "rm -rf"}).encode()], "BAD_INPUT"),
    ([json.dumps({"v": 1, "type": "result", "job": "x2"}).encode()], "BAD_INPUT"),
    ([json.dumps({"v": 1, "type": "submit", "job": "x3", "op": "reconstruct",
                  "blobs": [{"name": "image", "media": "image/png", "nbytes": 5}]}).encode(),
      b"1234"], "BAD_INPUT"),
    ([json.dumps({"v": 1, "type": ["submit"], "job": "x4"}).encode()], "BAD_INPUT"),
    ([json.dumps({"v": 1, "type": "submit", "job": "x5", "op": "echo",
                  "blobs": [{"name": "a", "media": ["image/png"], "nbytes": 1}]}).encode(), b"1"],
     "BAD_INPUT"),
])
def test_malformed_messages_get_coded_errors(backend, frames, code):
    reply = raw_request(backend.endpoint, frames)
    assert reply["type"] == "error" and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    # the error names the job whenever its id could be read, so the request gets it, not a timeout
    sent = json.loads(frames[0]) if frames[0].startswith(b"{") else {}
    assert reply["job"] == sent.get("job", "")
    assert raw_request(backend.endpoint, [json.dumps({"v": 1, "type": "ping", "job": "p"}).encode()])


@pytest.mark.parametrize("data,code", [
    (b"definitely not an image", "BAD_INPUT"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "BAD_INPUT"),  # truncated PNG
    (bomb_png(), "TOO_LARGE"),
])
def test_bad_images_are_refused_and_server_keeps_serving(backend, data, code):
    with Client(backend.endpoint) as c:
        job = c.submit("reconstruct", {}, {"image": data}, {"image": "image/png"})
        with pytest.raises(BackendError) as err:
            c.wait(job, timeout=30)
        assert err.value.code == code
        assert c.ping() < 5


def test_reconstruct_returns_coloured_points(backend):
    with Client(backend.endpoint) as c:
        stages = []
        job = c.submit("reconstruct", {"max_points": 5000}, {"image": png_bytes(disc_rgba())},
                       {"image": "image/png"})
        res = c.wait(job, timeout=120, on_progress=lambda v, s, m: stages.append((v, s)))
    xyz, rgb = points_from_result(res)
    assert 100 < len(xyz) <= 5000
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8
    assert np.linalg.norm(xyz, axis=1).max() < 1.5  # unit-ball frame
    assert res.meta["frame"] == "viewer-unit-ball/v1" and res.meta["count"] == len(xyz)
    assert stages and stages[0][1] == "queued"
    assert all(b[0] >= a[0] or b[1] == "queued" for a, b in zip(stages, stages[1:]))


def test_bad_params_are_refused(backend):
    with Client(backend.endpoint) as c:
        job = c.submit("reconstruct", {"max_points": "lots"}, {"image": png_bytes(disc_rgba())},
                       {"image": "image/png"})
        with pytest.raises(BackendError) as err:
            c.wait(job, timeout=60)
    assert err.value.code == "BAD_INPUT"


def test_blank_image_fails_alone_in_its_batch(backend):
    """An image with no object is its sender's mistake: that job alone fails BAD_INPUT, and the
    jobs micro-batched with it still get their points from one shared forward pass."""
    blank = {"transparent": png_bytes(np.zeros((64, 64, 4), np.uint8)),
             "uniform": png_bytes(np.full((64, 64, 3), 255, np.uint8)),
             "tiny": png_bytes(np.full((1, 1, 3), 90, np.uint8))}
    good = {n: example_image(f"{n}.png").read_bytes() for n in ("chair", "car", "mug")}
    images = {**good, **blank}
    with Client(backend.endpoint) as c:
        hold = c.submit("echo", {"delay_s": 1.0})  # busy worker: the rest queue up as one batch
        jobs = {n: c.submit("reconstruct", {"max_points": 2000}, {"image": images[n]},
                            {"image": "image/png"})
                for n in ("chair", "transparent", "car", "uniform", "mug", "tiny")}
        c.wait(hold, timeout=30)
        for n in blank:
            with pytest.raises(BackendError) as err:
                c.wait(jobs[n], timeout=120)
            assert err.value.code == "BAD_INPUT", (n, err.value.message)
            assert "no object" in err.value.message
        for n in good:
            res = c.wait(jobs[n], timeout=120)
            assert len(points_from_result(res)[0]) > 100
            assert res.meta["batch"] == len(good)  # the good ones still share one forward pass


def test_cancel_a_queued_job(backend):
    with Client(backend.endpoint) as c:
        img = png_bytes(disc_rgba())
        first = c.submit("reconstruct", {}, {"image": img}, {"image": "image/png"})
        second = c.submit("reconstruct", {}, {"image": img}, {"image": "image/png"})
        c.cancel(second)
        outcomes = {}
        deadline = time.monotonic() + 60
        while len(outcomes) < 2 and time.monotonic() < deadline:
            for ev in c.poll_events(0.5):
                if ev.kind in {"result", "error"}:
                    outcomes[ev.job] = ev.message.header.get("error", {}).get("code", ev.kind)
    # the first may or may not have been batched with the second, but the second never runs to a result
    assert outcomes[second] == "CANCELLED"
    assert outcomes[first] in {"result", "CANCELLED"}


def test_lone_client_does_not_wait_for_batch_company():
    """Micro-batching waits for more jobs only under demand: with a one-minute batch window, a
    lone client's jobs still come back one by one, unbatched, long before the window closes."""
    b = BackendProcess("--lazy", "--batch-wait-ms", "60000")
    try:
        with Client(b.endpoint) as c:
            for i in range(3):
                res = c.wait(c.submit("echo", {}, {"data": np.arange(i + 1, dtype=np.int32)}),
                             timeout=20)
                assert res.blobs["data"].tolist() == list(range(i + 1))
                assert res.meta["batch"] == 1
    finally:
        assert b.stop() == 0


def test_ping_cli_answers_then_fails_fast_when_killed(fresh_backend):
    cmd = [sys.executable, "-m", "image2points.backend.cli", "ping", "--endpoint", fresh_backend.endpoint,
           "--timeout", "2"]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "protocol v1" in ok.stdout and "device cpu" in ok.stdout
    assert fresh_backend.stop() == 0  # SIGTERM -> graceful exit 0
    t0 = time.monotonic()
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "not reachable" in bad.stderr
    assert time.monotonic() - t0 < 15


def test_client_unreachable_is_a_coded_error():
    with Client("tcp://127.0.0.1:9", connect_timeout=0.3) as c:  # port 9: nothing listens
        with pytest.raises(BackendError) as err:
            c.hello(timeout=0.3)
    assert err.value.code == "UNREACHABLE"
    assert "image2points serve" in err.value.message


def test_non_loopback_bind_refused_without_curve():
    out = subprocess.run([sys.executable, "-m", "image2points.backend.cli", "serve", "--host", "0.0.0.0",
                          "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "CurveZMQ" in out.stderr


def test_kept_finals_are_bounded_by_bytes_as_well_as_by_count():
    """Finals kept for reconnecting clients: 40 results of 64 MB once held 2.8 GB."""
    from image2points.backend.worker_protocol import KeptFinals

    kept = KeptFinals(keep_s=60, max_count=4, max_bytes=1000)
    for i in range(5):
        kept.add(f"j{i}", [b"h", memoryview(b"x" * 299)])  # 300 bytes each
    assert kept.expire() == ["j0", "j1"] and kept.nbytes == 900 and len(kept) == 3
    for i in range(5, 8):
        kept.add(f"j{i}", [b"", b"y"])
    assert kept.expire() == ["j2", "j3"] and len(kept) == 4  # the count bound
    assert KeptFinals(keep_s=0).expire() == []



def test_broker_and_server_share_only_the_worker_protocol():
    """Neither side imports the other (tests/test_layout.py checks for circles in general)."""
    from test_layout import graph

    g, b = graph(), "image2points.backend."
    server_side = {b + m for m in ("server", "frontend", "broker_link", "worker")}
    assert b + "broker" not in set().union(*(g[m] for m in server_side))
    assert not g[b + "broker"] & server_side
    assert b + "worker_protocol" in g[b + "broker"] & g[b + "frontend"] & g[b + "broker_link"]
