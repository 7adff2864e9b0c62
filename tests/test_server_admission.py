"""What the server's front end refuses before a job takes a queue slot, and what it lets through.

The first reply to a submit tells which: an error (refused at admission) or progress "queued".
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from images import bomb_png
from PIL import Image
from test_server import raw_request

from image2points.addon.core.client import Client


def submit_frames(job: str, image: bytes | None, media: str = "image/png") -> list[bytes]:
    blobs = [] if image is None else [{"name": "image", "media": media, "nbytes": len(image)}]
    header = {"v": 1, "type": "submit", "job": job, "op": "reconstruct", "params": {}, "blobs": blobs}
    return [json.dumps(header).encode(), *([] if image is None else [image])]


def test_a_submit_without_its_required_image_is_refused_at_admission(backend):
    reply = raw_request(backend.endpoint, submit_frames("noimg", None))
    assert reply["type"] == "error" and reply["job"] == "noimg"
    assert reply["error"]["code"] == "BAD_INPUT" and "'image'" in reply["error"]["message"]


@pytest.mark.parametrize("image,media,claim", [
    (bomb_png(60_000, 60_000)[:29] + b"\0\0\0\0", "image/png", "60000x60000"),  # CRC wrong
    (b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03" + b"\0" * 9, "image/jpeg", "65535x65535"),
    (b"RIFF\x20\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0" + b"\xff" * 6, "image/webp", "16777216x16777216"),
])
def test_header_bombs_are_refused_at_admission(backend, image, media, claim):
    reply = raw_request(backend.endpoint, submit_frames(f"bomb-{media[6:]}", image, media))
    assert reply["type"] == "error" and reply["error"]["code"] == "TOO_LARGE", reply
    assert claim in reply["error"]["message"]


def test_a_big_photo_is_not_refused_at_admission(backend):
    """6000x4000 is a camera photo, not a bomb: admission is for bomb-scale claims only (the
    worker decides how to handle large images), so it is queued."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4000, 6000, 3), np.uint8)).save(buf, format="JPEG", quality=50)
    reply = raw_request(backend.endpoint, submit_frames("photo", buf.getvalue(), "image/jpeg"))
    assert reply["type"] == "progress" and reply["progress"]["stage"] == "queued", reply
    with Client(backend.endpoint) as c:
        limits = c.hello()["limits"]
    assert limits["max_header_pixels"] > 6000 * 4000
