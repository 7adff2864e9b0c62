"""The client's own checks, before anything goes on the wire: endpoint form and request size."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from conftest import BackendProcess

from image2points.addon.core import protocol
from image2points.addon.core.client import (
    DEFAULT_ENDPOINT,
    BackendError,
    Client,
    Done,
    Failed,
    Progress,
    endpoint_error,
)


@pytest.mark.parametrize("endpoint", [DEFAULT_ENDPOINT, "tcp://localhost:5555", "tcp://[::1]:7000",
                                      "tcp://192.0.2.7:1", "ipc:///tmp/i2p.sock", "inproc://x"])
def test_connectable_endpoints_pass(endpoint):
    assert endpoint_error(endpoint) == ""


@pytest.mark.parametrize("endpoint,why", [
    ("tcp://127.0.0.1", "has no port"), ("tcp://127.0.0.1:", "has no port"),
    ("tcp://:5555", "has no host"), ("tcp://127.0.0.1:99999", "out of range: ports are 1-65535"),
    ("tcp://127.0.0.1:0", "out of range"),
    ("tcp://127.0.0.1:http", "the port 'http' is not a number"),
    ("localhost:5555", "not a ZeroMQ endpoint"),
    ("http://127.0.0.1:5555", "not a ZeroMQ endpoint"), ("", "not a ZeroMQ endpoint"),
    ("tcp://*:5555", "to bind"), ("tcp://0.0.0.0:5555", "to bind"), ("ipc://", "no path"),
])
def test_malformed_endpoints_say_why(endpoint, why):
    assert why in endpoint_error(endpoint)


def test_a_request_over_the_backends_limit_is_refused_at_once_and_the_client_goes_on():
    """The backend's socket drops an over-size message without a word, which would look like a
    dead backend after the stall timeout; hello() tells the client the limit, so it refuses first."""
    b = BackendProcess("--lazy", "--max-message-mb", "1")
    try:
        with Client(b.endpoint) as c:
            assert c.hello()["limits"]["max_message_bytes"] == 1 << 20
            assert c.limits["max_message_bytes"] == 1 << 20
            t0 = time.monotonic()
            with pytest.raises(BackendError) as err:
                c.submit("echo", {}, {"data": np.zeros(300_000, np.float32)})  # 1.2 MB
            assert err.value.code == "TOO_LARGE" and "at most 1 MB" in err.value.message
            assert time.monotonic() - t0 < 1.0 and not c.pending_jobs
            res = c.wait(c.submit("echo", {}, {"data": np.arange(5, dtype=np.int32)}), timeout=20)
            assert res.blobs["data"].tolist() == [0, 1, 2, 3, 4]
    finally:
        assert b.stop() == 0


def test_without_hello_the_protocol_default_limit_applies():
    with Client("tcp://127.0.0.1:9", connect_timeout=0.2) as c:
        assert c.limits == {}
        blob = np.zeros(protocol.DEFAULT_MAX_MESSAGE_BYTES // 4 + 16, np.float32)
        with pytest.raises(BackendError) as err:
            c.submit("echo", {}, {"data": blob})
        assert err.value.code == "TOO_LARGE"


def test_parameters_too_big_for_a_header_are_refused_at_once():
    """A header over the limit cannot even be read for its job id: the client refuses it itself."""
    with Client("tcp://127.0.0.1:9", connect_timeout=0.2) as c:
        with pytest.raises(BackendError) as err:
            c.submit("echo", {"note": "x" * (protocol.MAX_HEADER_BYTES + 1)})
        assert err.value.code == "TOO_LARGE" and "blobs" in err.value.message
        assert not c.pending_jobs


def _orphan_error_peer(ctx: zmq.Context) -> tuple[zmq.Socket, str]:
    """A ROUTER that answers every message with an error that names no job (what a backend
    sends when it cannot read the request's job id)."""
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def _answer_orphan(s: zmq.Socket, code: str) -> None:
    if s.poll(5000):
        ident, *_ = s.recv_multipart()
        s.send_multipart([ident, *protocol.encode(protocol.error_header("", code, "why"))])


def test_an_error_naming_no_job_fails_the_one_request_in_flight():
    ctx = zmq.Context()
    peer, endpoint = _orphan_error_peer(ctx)
    try:
        with Client(endpoint, context=ctx) as c:
            job = c.submit("echo", {})
            _answer_orphan(peer, "VERSION")
            with pytest.raises(BackendError) as err:
                c.wait(job, timeout=5, stall_timeout=5, retries=0)
            assert err.value.code == "VERSION" and job not in c.pending_jobs
            t = threading.Thread(target=_answer_orphan, args=(peer, "TOO_LARGE"))
            t.start()
            with pytest.raises(BackendError) as err:
                c.hello(timeout=5)
            t.join()
            assert err.value.code == "TOO_LARGE"
    finally:
        peer.close()
        ctx.term()


def test_many_unclaimed_results_do_not_stall_the_client():
    """Finals of cancelled jobs are dropped, and the socket is read however many finals of
    other jobs are kept: waiting for the last of 70 jobs first, then the rest, all arrive."""
    b = BackendProcess("--lazy", "--max-inflight", "200", "--max-queue", "200")
    try:
        with Client(b.endpoint) as c:
            data = np.arange(4, dtype=np.int32)
            for j in [c.submit("echo", {}, {"data": data}) for _ in range(70)]:
                c.cancel(j)
            jobs = [c.submit("echo", {"i": i}, {"data": data + i}) for i in range(70)]
            assert c.wait(jobs[-1], timeout=30, retries=0).blobs["data"].tolist() == [69, 70, 71, 72]
            assert c.hello(timeout=10)["name"] == "image2points"
            for i, j in enumerate(jobs[:-1]):
                assert c.wait(j, timeout=30, retries=0).blobs["data"][0] == i
            assert len(c._backlog) == 0
    finally:
        assert b.stop() == 0


@pytest.mark.parametrize("params,blobs", [
    ({"max_points": float("nan")}, {}),
    ({"when": object()}, {}),
    ({}, {"data": np.zeros(2, np.float64)}),  # float64 does not cross the wire
])
def test_unsendable_requests_are_coded_errors(params, blobs):
    with Client("tcp://127.0.0.1:9", connect_timeout=0.2) as c:
        with pytest.raises(BackendError) as err:
            c.submit("echo", params, blobs)
        assert err.value.code == "BAD_INPUT" and not c.pending_jobs


def test_poll_job_gives_one_jobs_typed_events_and_keeps_the_others_results():
    """What Blender's modal timer polls: Progress until the job's Done or Failed; another job's
    result read meanwhile is kept for whoever waits for it."""
    b = BackendProcess("--lazy")
    try:
        with Client(b.endpoint) as c:
            other = c.submit("echo", {}, {"data": np.arange(3, dtype=np.int32)})
            bad = c.submit("no_such_op")
            events: list = []
            deadline = time.monotonic() + 20
            while not any(isinstance(e, (Done, Failed)) for e in events) and time.monotonic() < deadline:
                events += c.poll_job(bad, 0.2)
            assert isinstance(events[-1], Failed) and "unknown op" in events[-1].error.message
            assert events[-1].error.job == bad and bad not in c.pending_jobs
            assert all(isinstance(e, Progress) for e in events[:-1])
            assert c.wait(other, timeout=20).blobs["data"].tolist() == [0, 1, 2]
            job = c.submit("echo", {}, {"data": np.arange(4, dtype=np.int32)})
            events = []
            while not any(isinstance(e, (Done, Failed)) for e in events) and time.monotonic() < deadline:
                events += c.poll_job(job, 0.2)
            assert isinstance(events[-1], Done) and events[-1].result.blobs["data"].tolist() == [0, 1, 2, 3]
    finally:
        assert b.stop() == 0
