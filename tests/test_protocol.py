import json

import numpy as np
import pytest

from image2points.addon.core import protocol
from image2points.addon.core.protocol import ProtocolError


def roundtrip(header, blobs=None, media=None):
    frames = protocol.encode(header, blobs, media)
    return protocol.decode([bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames])


def test_roundtrip_arrays_and_media():
    xyz = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 256, (1000, 3), dtype=np.uint8)
    msg = roundtrip({"type": "result", "job": "abc", "meta": {"n": 1000}},
                    {"xyz": xyz, "rgb": rgb, "image": b"\x89PNG..."}, {"image": "image/png"})
    assert msg.type == "result" and msg.job == "abc"
    np.testing.assert_array_equal(msg.blobs["xyz"], xyz)
    np.testing.assert_array_equal(msg.blobs["rgb"], rgb)
    assert bytes(msg.blobs["image"]) == b"\x89PNG..."
    assert msg.header["v"] == protocol.PROTOCOL_VERSION


def test_empty_array_roundtrip():
    msg = roundtrip({"type": "result", "job": "a"}, {"xyz": np.zeros((0, 3), np.float32)})
    assert msg.blobs["xyz"].shape == (0, 3)


def test_big_endian_is_sent_little_endian():
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    msg = roundtrip({"type": "result", "job": "a"}, {"a": a})
    np.testing.assert_array_equal(msg.blobs["a"], a.astype("<f4"))


def frames_with(header, *blobs):
    return [json.dumps(header).encode(), *blobs]


BASE = {"v": 1, "type": "submit", "job": "j1", "op": "reconstruct"}


@pytest.mark.parametrize("frames,code", [
    ([], "BAD_INPUT"),
    ([b"\xff\xfe"], "BAD_INPUT"),
    ([b"not json"], "BAD_INPUT"),
    ([b"[1,2]"], "BAD_INPUT"),
    (frames_with({**BASE, "v": 99}), "VERSION"),
    (frames_with({**BASE, "type": "exec"}), "BAD_INPUT"),
    (frames_with({**BASE, "job": "../../etc"}), "BAD_INPUT"),
    (frames_with({**BASE, "params": [1]}), "BAD_INPUT"),
    (frames_with({**BASE, "blobs": [{"name": "a", "dtype": "<f4", "shape": [2], "nbytes": 8}]}),
     "BAD_INPUT"),  # declared blob, no frame
    (frames_with({**BASE, "blobs": [{"name": "a", "dtype": "|O", "shape": [1], "nbytes": 8}]},
                 b"12345678"), "BAD_INPUT"),  # object dtype refused
    (frames_with({**BASE, "blobs": [{"name": "a", "dtype": "<f4", "shape": [3], "nbytes": 8}]},
                 b"12345678"), "BAD_INPUT"),  # shape x itemsize != bytes
    (frames_with({**BASE, "blobs": [{"name": "a", "dtype": "<f4", "shape": [2], "nbytes": 9}]},
                 b"12345678"), "BAD_INPUT"),  # nbytes lies
    (frames_with({**BASE, "blobs": [{"name": "a", "dtype": "<f4", "shape": [-2], "nbytes": 8}]},
                 b"12345678"), "BAD_INPUT"),
    (frames_with({**BASE, "blobs": [{"name": "a", "media": "text/html", "nbytes": 8}]},
                 b"12345678"), "BAD_INPUT"),
    (frames_with({**BASE, "blobs": [{"name": "a/b", "media": "image/png", "nbytes": 1}]}, b"1"),
     "BAD_INPUT"),
    (frames_with({**BASE, "blobs": [{"name": "a", "media": "image/png", "nbytes": 1},
                                    {"name": "a", "media": "image/png", "nbytes": 1}]}, b"1", b"1"),
     "BAD_INPUT"),  # duplicate name
])
def test_rejections(frames, code):
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frames)
    assert err.value.code == code


def test_declared_size_limit_checked_before_data():
    hdr = {**BASE, "blobs": [{"name": "a", "media": "image/png", "nbytes": 10**12}]}
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frames_with(hdr, b"x"), max_bytes=1 << 20)
    assert err.value.code == "TOO_LARGE"


def test_unsendable_dtype_refused_on_encode():
    with pytest.raises(ProtocolError):
        protocol.encode({"type": "result"}, {"a": np.zeros(3, dtype=np.float64)})


def test_require_array_checks_dtype_and_shape():
    msg = roundtrip({"type": "result", "job": "a"}, {"xyz": np.zeros((4, 3), np.float32)})
    assert protocol.require_array(msg, "xyz", "<f4", (None, 3)).shape == (4, 3)
    with pytest.raises(ProtocolError):
        protocol.require_array(msg, "xyz", "|u1", (None, 3))
    with pytest.raises(ProtocolError):
        protocol.require_array(msg, "xyz", "<f4", (5, 3))
    with pytest.raises(ProtocolError):
        protocol.require_array(msg, "rgb", "|u1", (None, 3))


def test_addon_package_imports_without_bpy():
    import subprocess
    import sys

    code = ("import sys; sys.modules['bpy'] = sys.modules['mathutils'] = None; "
            "import image2points.addon.core.protocol, image2points.addon.core.client, "
            "image2points.addon.core.camera, image2points.addon.core.plyio, "
            "image2points.addon.core.nerf_capture, image2points.addon.core.colour; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("header,code", [
    ({**BASE, "type": ["submit"]}, "BAD_INPUT"),  # unhashable: was a TypeError, and no reply
    ({**BASE, "v": True}, "VERSION"),  # True == 1 in Python, not on the wire
])
def test_wrongly_typed_fields_are_refused(header, code):
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frames_with(header))
    assert err.value.code == code


def test_a_media_list_is_refused():
    hdr = {**BASE, "blobs": [{"name": "a", "media": ["image/png"], "nbytes": 1}]}
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frames_with(hdr, b"1"))
    assert err.value.code == "BAD_INPUT"


def test_a_refusal_names_the_job_once_its_id_was_read():
    """So the error reaches the request waiting for it, not a timeout."""
    big = {**BASE, "blobs": [{"name": "a", "media": "image/png", "nbytes": 10**12}]}
    for frames in (frames_with({**BASE, "v": 2}), frames_with({**BASE, "type": "exec"}),
                   frames_with(big, b"1")):
        with pytest.raises(ProtocolError) as err:
            protocol.decode(frames, max_bytes=1 << 20)
        assert err.value.job == "j1", err.value
    for frames in ([b"not json"], frames_with({**BASE, "job": "../etc"})):
        with pytest.raises(ProtocolError) as err:
            protocol.decode(frames)
        assert err.value.job == ""
