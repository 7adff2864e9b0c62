"""CurveZMQ Ironhouse: listed client keys are served, anyone else gets nothing at all."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zmq.auth
from conftest import ROOT, BackendProcess
from test_server_procs import CLI, BrokerProcess, check_strangers_cannot_touch_a_job, wait_until

from image2points.addon.core.client import BackendError, Client, CurveKeys

pytestmark = pytest.mark.slow


def keys_new(d: Path, name: str) -> tuple[bytes, bytes]:
    out = subprocess.run([*CLI, "keys", "new", str(d), "--name", name], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "secret key" in out.stdout
    pub, sec = zmq.auth.load_certificate(str(d / f"{name}.key_secret"))
    assert sec is not None
    return pub, sec


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    srv_pub, _ = keys_new(d / "server", "server")
    cli_pub, cli_sec = keys_new(d / "client", "client")
    out_pub, out_sec = keys_new(d / "stranger", "stranger")
    allowed = d / "allowed"
    allowed.mkdir()
    shutil.copy(d / "client" / "client.key", allowed / "client.key")
    b = BackendProcess("--lazy", "--curve-secret", str(d / "server" / "server.key_secret"),
                       "--curve-clients", str(allowed))
    yield b, d, CurveKeys(srv_pub, cli_pub, cli_sec), CurveKeys(srv_pub, out_pub, out_sec)
    assert b.stop() == 0


def test_allowed_key_is_served(curve):
    b, _, good, _ = curve
    with Client(b.endpoint, curve=good) as c:
        info = c.hello()
        assert info["curve"] is True
        res = c.wait(c.submit("echo", {}, {"data": np.arange(3, dtype=np.int32)}), timeout=20)
    assert res.blobs["data"].tolist() == [0, 1, 2]


def test_ping_cli_with_and_without_keys(curve):
    b, d, _, _ = curve
    ping = [*CLI, "ping", "--endpoint", b.endpoint, "--timeout", "2"]
    ok = subprocess.run([*ping, "--server-key", str(d / "server" / "server.key"),
                         "--client-key", str(d / "client" / "client.key_secret")],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "image2points" in ok.stdout and "protocol v" in ok.stdout
    plain = subprocess.run(ping, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "ping:" in plain.stderr
    half = subprocess.run([*ping, "--server-key", str(d / "server" / "server.key")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "--client-key" in half.stderr
    public_only = subprocess.run([*ping, "--server-key", str(d / "server" / "server.key"),
                                  "--client-key", str(d / "client" / "client.key")],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert public_only.returncode == 2 and "no secret key" in public_only.stderr


def test_unknown_key_gets_nothing(curve):
    b, _, _, stranger = curve
    with Client(b.endpoint, curve=stranger, connect_timeout=1.0) as c:
        with pytest.raises(BackendError) as err:
            c.hello(timeout=1.0)
        assert err.value.code == "UNREACHABLE"
        assert c.poll_events(0.3) == []


def test_plain_client_to_curve_server_gets_nothing(curve):
    b, *_ = curve
    with Client(b.endpoint, connect_timeout=1.0) as c:
        with pytest.raises(BackendError) as err:
            c.hello(timeout=1.0)
        assert err.value.code == "UNREACHABLE"
    raw = zmq.Context.instance().socket(zmq.DEALER)  # no IMMEDIATE: the message is queued, never read
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.endpoint)
    raw.send_multipart([b'{"v":1,"type":"hello","job":"x"}'])
    assert raw.poll(500) == 0
    raw.close()


def test_broker_with_curve_on_both_sides(curve, tmp_path):
    """The documented two-host set-up, on one host: CURVE client->broker and worker->broker."""
    _, d, good, _ = curve
    broker_pub, _ = keys_new(tmp_path / "broker", "broker")
    keys_new(tmp_path / "worker", "worker")
    workers = tmp_path / "workers"
    workers.mkdir()
    shutil.copy(tmp_path / "worker" / "worker.key", workers / "worker.key")
    allowed = d / "allowed"
    br = BrokerProcess("--curve-secret", str(tmp_path / "broker" / "broker.key_secret"),
                       "--curve-clients", str(allowed), "--curve-workers", str(workers))
    w = BackendProcess("--lazy", "--connect-broker", br.backend,
                       "--curve-secret", str(tmp_path / "worker" / "worker.key_secret"),
                       "--broker-key", str(tmp_path / "broker" / "broker.key"))
    try:
        keys = CurveKeys(broker_pub, good.client_public, good.client_secret)
        with Client(br.endpoint, curve=keys) as c:
            wait_until(lambda: len(c.hello()["workers"]) == 1, 30, "the CURVE worker")
            res = c.wait(c.submit("echo", {}, {"data": np.ones(2, np.float32)}), timeout=20)
            assert res.meta["pid"] == w.proc.pid
        with Client(br.endpoint, connect_timeout=1.0) as plain:
            with pytest.raises(BackendError):
                plain.hello(timeout=1.0)
    finally:
        w.stop()
        br.stop()


def test_broker_with_curve_keeps_client_and_worker_keys_apart(curve, tmp_path):
    """A client key must never register as a worker (it would see and answer others' jobs)."""
    _, d, _, _ = curve
    keys_new(tmp_path / "broker", "broker")
    secret, allowed = str(tmp_path / "broker" / "broker.key_secret"), str(d / "allowed")
    with pytest.raises(RuntimeError, match="--curve-workers"):
        BrokerProcess("--curve-secret", secret, "--curve-clients", allowed)
    with pytest.raises(RuntimeError, match="both as client"):
        BrokerProcess("--curve-secret", secret, "--curve-clients", allowed,
                      "--curve-workers", allowed)


def test_with_curve_a_job_belongs_to_its_key(curve, tmp_path):
    """Under CURVE a job is its key's, not its socket's: a colleague's allowed key cannot take
    it, while the owner's key on a fresh client (a restarted Blender) can follow it."""
    _, d, good, other = curve
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for who in ("client", "stranger"):
        shutil.copy(d / who / f"{who}.key", allowed / f"{who}.key")
    b = BackendProcess("--lazy", "--curve-secret", str(d / "server" / "server.key_secret"),
                       "--curve-clients", str(allowed))
    try:
        with Client(b.endpoint, curve=good) as owner, Client(b.endpoint, curve=other) as colleague:
            job = check_strangers_cannot_touch_a_job(owner, colleague)
        with Client(b.endpoint, curve=good) as again:
            again.submit("echo", {}, {"data": np.zeros(6, np.float32)}, job=job)
            assert again.wait(job, timeout=20, retries=0).blobs["data"].tolist() == list(range(6))
    finally:
        assert b.stop() == 0


def test_no_pickle_and_no_client_supplied_paths():
    """Grep-level guarantees: nothing unpickles, torch.load is weights_only, and the service
    modules open files only from the command line or /proc (never a path a client sent)."""
    import re

    src = {p: p.read_text() for d in ("backend", "addon") for p in (ROOT / d).rglob("*.py")}
    for p, text in src.items():
        assert not re.search(r"pickle\.loads?\(|recv_pyobj|allow_pickle=True", text), p
        for call in re.findall(r"torch\.load\(.*", text):  # the rest of the line
            assert "weights_only=True" in call, (p, call)
    allowed = {'"/proc/meminfo"', "tmp", 'args.ready_file + ".tmp"'}
    for name in ("server.py", "frontend.py", "broker_link.py", "worker.py", "worker_protocol.py",
                 "broker.py", "ops_builtin.py", "images.py", "reconstruct_op.py", "ops.py",
                 "registry.py", "limits.py", "image_header.py"):
        for arg in re.findall(r"(?<![\w.])open\(([^,)]*)", src[ROOT / "backend" / name]):
            assert arg.strip() in allowed, (name, arg)
