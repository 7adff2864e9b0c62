"""The client's own checks, before anything goes on the wire: endpoint form and request size."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import BackendProcess

from addon import protocol
from addon.client import DEFAULT_ENDPOINT, BackendError, Client, endpoint_error


@pytest.mark.parametrize("endpoint", [DEFAULT_ENDPOINT, "tcp://localhost:5555", "tcp://[::1]:7000",
                                      "tcp://192.0.2.7:1", "ipc:///tmp/i2p.sock", "inproc://x"])
def test_connectable_endpoints_pass(endpoint):
    assert endpoint_error(endpoint) == ""


@pytest.mark.parametrize("endpoint,why", [
    ("tcp://127.0.0.1", "host and a port"), ("tcp://127.0.0.1:", "host and a port"),
    ("tcp://:5555", "host and a port"), ("tcp://127.0.0.1:99999", "host and a port"),
    ("tcp://127.0.0.1:http", "host and a port"), ("localhost:5555", "not a ZeroMQ endpoint"),
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
