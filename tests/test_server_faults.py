"""Faults and lifecycle: killed/restarted servers, dead workers, cancel, limits, shutdown."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
from conftest import BackendProcess
from test_server import raw_request
from test_server_procs import BrokerProcess, check_strangers_cannot_touch_a_job, wait_until, worker

from image2points.addon.core import protocol
from image2points.addon.core.client import BackendError, Client

pytestmark = pytest.mark.slow

DATA = np.arange(6, dtype=np.float32)


def _started(c: Client, job: str) -> bool:
    return any(ev.job == job and ev.kind == "progress"
               and ev.message.header["progress"]["stage"] not in ("queued",)
               for ev in c.poll_events(0.2))


def test_server_killed_mid_job_client_reports_within_its_deadline():
    b = BackendProcess("--lazy")
    with Client(b.endpoint, connect_timeout=1.0) as c:
        job = c.submit("echo", {"delay_s": 8}, {"data": DATA})
        wait_until(lambda: _started(c, job), 20, "the job to start")
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        t0 = time.monotonic()
        with pytest.raises(BackendError) as err:
            c.wait(job, timeout=20, stall_timeout=5)
        took = time.monotonic() - t0
    b.stop()
    assert err.value.code == "UNREACHABLE" and err.value.local, err.value
    assert took < 8, took  # connection loss is noticed in ~1.5 s + one reconnect attempt


def test_restarted_server_same_client_resends_and_next_job_succeeds():
    b = BackendProcess("--lazy")
    port = b.port
    with Client(b.endpoint, connect_timeout=2.0) as c:
        job = c.submit("echo", {"delay_s": 3}, {"data": DATA})
        wait_until(lambda: _started(c, job), 20, "the job to start")
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        b.stop()
        b2 = _restart_on(port)
        try:
            # the in-flight job is re-sent under the same id on a re-created socket
            res = c.wait(job, timeout=40, stall_timeout=5)
            assert np.array_equal(res.blobs["data"], DATA) and res.job == job
            nxt = c.wait(c.submit("echo", {}, {"data": DATA * 2}), timeout=20)
            assert np.array_equal(nxt.blobs["data"], DATA * 2)
        finally:
            b2.stop()


def _restart_on(port: int) -> BackendProcess:
    """A new server on the same port (retrying briefly while the kernel releases it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _backend_on_port(port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def _backend_on_port(port: int) -> BackendProcess:
    return BackendProcess("--lazy", "--port", str(port))  # a later --port wins in argparse


def test_resent_job_id_is_not_run_twice(backend):
    with Client(backend.endpoint) as c:
        job = c.submit("echo", {"delay_s": 0.5}, {"data": DATA})
        assert c.reconnect(resend=True)  # a new socket (same routing id), same job id
        res = c.wait(job, timeout=20)
        assert np.array_equal(res.blobs["data"], DATA)
        extra = [ev for ev in c.poll_events(0.7) if ev.job == job and ev.kind in ("result", "error")]
    assert extra == []


def test_a_submit_read_under_a_libzmq_name_is_followed_by_its_identical_resend(backend):
    """ROUTER_HANDOVER renames a reconnecting client's old connection, so a submit still unread
    there arrives under a name libzmq made up (a DEALER without a routing id shows the same).
    The client's re-send of the same frames follows that job; other frames under its id do not."""
    import zmq

    ctx = zmq.Context.instance()
    anon = ctx.socket(zmq.DEALER)
    anon.connect(backend.endpoint)
    job = "renamed-" + protocol.new_job_id()
    frames = protocol.encode({"type": "submit", "job": job, "op": "echo",
                              "params": {"delay_s": 0.5}}, {"data": DATA})
    try:
        anon.send_multipart(frames)
        assert anon.poll(10_000), "no answer to the anonymous submit"
        with Client(backend.endpoint) as c, Client(backend.endpoint) as stranger:
            stranger._pending[job] = protocol.encode(
                {"type": "submit", "job": job, "op": "echo", "params": {}}, {"data": DATA[:2]})
            assert stranger.reconnect(resend=True)
            with pytest.raises(BackendError) as err:
                stranger.wait(job, timeout=10)
            assert err.value.code == "BAD_INPUT" and "unknown job" in err.value.message
            c._pending[job] = frames
            assert c.reconnect(resend=True)
            res = c.wait(job, timeout=20)
            assert np.array_equal(res.blobs["data"], DATA)
    finally:
        anon.close(linger=0)


def test_another_client_cannot_follow_or_cancel_a_job(backend):
    with Client(backend.endpoint) as owner, Client(backend.endpoint) as stranger:
        check_strangers_cannot_touch_a_job(owner, stranger)


def test_another_client_cannot_follow_or_cancel_a_job_at_the_broker():
    br = BrokerProcess()
    w = worker(br)
    try:
        with Client(br.endpoint) as owner, Client(br.endpoint) as stranger:
            wait_until(lambda: len(owner.hello()["workers"]) == 1, 30, "a worker")
            check_strangers_cannot_touch_a_job(owner, stranger)
    finally:
        w.stop()
        br.stop()


def test_cancel_a_running_job_stops_it_at_a_stage_boundary(backend):
    with Client(backend.endpoint) as c:
        job = c.submit("echo", {"delay_s": 8}, {"data": DATA})
        wait_until(lambda: _started(c, job), 20, "the job to start")
        t0 = time.monotonic()
        c.cancel(job)
        assert job not in c.pending_jobs
        codes = []
        wait_until(lambda: [codes.append(ev.message.header["error"]["code"])
                            for ev in c.poll_events(0.2) if ev.job == job and ev.kind == "error"],
                   10, "the CANCELLED error")
    assert codes == ["CANCELLED"] and time.monotonic() - t0 < 3


def test_busy_per_client_cap_and_full_queue():
    b = BackendProcess("--lazy", "--max-batch", "1", "--max-queue", "3", "--max-inflight", "2")
    try:
        with Client(b.endpoint) as a, Client(b.endpoint) as other, Client(b.endpoint) as third:
            a1 = a.submit("echo", {"delay_s": 5}, {"data": DATA})
            a.submit("echo", {"delay_s": 5}, {"data": DATA})
            with pytest.raises(BackendError) as err:
                a.wait(a.submit("echo", {}, {"data": DATA}), timeout=10)
            assert err.value.code == "BUSY" and "yours" in err.value.message
            for _ in range(2):  # confirmed queued before `third` asks (connections aren't ordered)
                o = other.submit("echo", {"delay_s": 5}, {"data": DATA})
                wait_until(lambda o=o: any(ev.job == o for ev in other.poll_events(0.2)), 10, "queued")
            with pytest.raises(BackendError) as err:
                third.wait(third.submit("echo", {}, {"data": DATA}), timeout=10)
            assert err.value.code == "BUSY"
            assert third.ping() < 5  # still serving everyone
            a.cancel(a1)
    finally:
        assert b.stop() == 0


def test_limits_are_coded_errors(backend):
    with Client(backend.endpoint) as c:
        big = c.submit("reconstruct", {"max_points": 10**9}, {"image": b"\x89PNG"}, {"image": "image/png"})
        with pytest.raises(BackendError) as err:
            c.wait(big, timeout=10)
        assert err.value.code == "TOO_LARGE" and not err.value.local
        info = c.hello()
    for key in ("version", "protocol", "device", "memory", "model", "limits", "queue"):
        assert key in info, key
    assert info["memory"].get("free", 0) > 0
    assert info["limits"]["max_points"] > 0 and info["limits"]["max_pixels"] > 0


def test_unload_answers(backend):
    with Client(backend.endpoint) as c:
        res = c.wait(c.unload(), timeout=20)
    assert "unloaded" in res.meta


def test_sigterm_tells_pending_clients_shutdown_and_exits_0():
    b = BackendProcess("--lazy", "--max-batch", "1")
    with Client(b.endpoint) as c:
        running = c.submit("echo", {"delay_s": 8}, {"data": DATA})
        queued = c.submit("echo", {"delay_s": 8}, {"data": DATA})
        wait_until(lambda: _started(c, running), 20, "the job to start")
        b.proc.send_signal(signal.SIGTERM)
        codes = {}
        def both() -> bool:
            for ev in c.poll_events(0.2):
                if ev.kind == "error":
                    codes[ev.job] = ev.message.header["error"]["code"]
            return len(codes) == 2
        wait_until(both, 20, "SHUTDOWN errors")
    assert codes == {running: "SHUTDOWN", queued: "SHUTDOWN"}
    assert b.stop() == 0


def test_worker_killed_behind_broker_job_requeued():
    br = BrokerProcess()
    ws = [worker(br), worker(br)]
    try:
        with Client(br.endpoint) as c:
            info = wait_until(lambda: (i := c.hello()) and len(i["workers"]) == 2 and i, 30,
                              "two workers")
            assert {w["pid"] for w in info["workers"]} == {w.proc.pid for w in ws}
            job = c.submit("echo", {"delay_s": 2}, {"data": DATA})
            busy = wait_until(lambda: [w for w in c.hello()["workers"] if w["busy"]], 20, "a busy worker")
            victim = next(w for w in ws if w.proc.pid == busy[0]["pid"])
            victim.proc.send_signal(signal.SIGKILL)
            res = c.wait(job, timeout=30, stall_timeout=8)
            assert np.array_equal(res.blobs["data"], DATA)
            assert res.meta["pid"] != victim.proc.pid
            assert "re-queued" in br.output()
    finally:
        for w in ws:
            w.stop()
        br.stop()


def test_job_whose_workers_keep_dying_gets_a_coded_error():
    br = BrokerProcess()
    w1 = worker(br)
    try:
        with Client(br.endpoint) as c:
            wait_until(lambda: len(c.hello()["workers"]) == 1, 30, "a worker")
            job = c.submit("echo", {"delay_s": 8}, {"data": DATA})
            wait_until(lambda: _started(c, job), 20, "the job to start")
            w1.proc.send_signal(signal.SIGKILL)
            w2 = worker(br)  # the job is re-queued onto this one, which dies too
            try:
                # not _started(): the broker's heartbeats for the job can arrive before w2 has it
                wait_until(lambda: any(w["busy"] and w["pid"] == w2.proc.pid
                                       for w in c.hello()["workers"]), 30,
                           "the job to restart on the second worker")
                w2.proc.send_signal(signal.SIGKILL)
                with pytest.raises(BackendError) as err:
                    c.wait(job, timeout=30, stall_timeout=10)
            finally:
                w2.stop()
        assert err.value.code == "MODEL" and "twice" in err.value.message
    finally:
        w1.stop()
        br.stop()


def test_broker_refuses_malformed_messages_naming_the_job():
    """The broker decodes client messages itself: a list as 'type' once got no reply at all."""
    br = BrokerProcess()
    try:
        for header, code in (({"v": 1, "type": ["submit"], "job": "b1"}, "BAD_INPUT"),
                             ({"v": 2, "type": "hello", "job": "b2"}, "VERSION")):
            reply = raw_request(br.endpoint, [json.dumps(header).encode()])
            assert reply["type"] == "error" and reply["error"]["code"] == code, reply
            assert reply["job"] == header["job"]
    finally:
        br.stop()


def test_broker_without_workers_fails_queued_jobs_with_a_reason():
    """The broker's heartbeats would keep the job alive on the client until its own timeout."""
    br = BrokerProcess("--no-worker-timeout", "1")
    try:
        with Client(br.endpoint) as c:
            job = c.submit("echo", {}, {"data": DATA})
            with pytest.raises(BackendError) as err:
                c.wait(job, timeout=15, stall_timeout=10, retries=0)
            assert err.value.code == "BUSY" and "no backend workers" in err.value.message
            assert "serve --connect-broker" in err.value.message
            w = worker(br)  # with a worker, jobs run again
            try:
                wait_until(lambda: len(c.hello()["workers"]) == 1, 30, "a worker")
                res = c.wait(c.submit("echo", {}, {"data": DATA}), timeout=20)
                assert np.array_equal(res.blobs["data"], DATA)
            finally:
                w.stop()
    finally:
        br.stop()
