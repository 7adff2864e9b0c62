"""Every size limit of the backend, and the one image size check, in one place.

Why one: the front end (what an image header claims), the worker (decoding) and in-process
decoding (CLI, NeRF frames) each kept their own numbers and wording. ``Limits`` is what one
``serve`` enforces, handed to its front end, its worker and the batchable ops alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from image2points.addon.core import protocol
from image2points.addon.core.limits import MAX_POINTS

from .ops import JobError

MAX_IMAGE_BYTES = 64 << 20  # one encoded image
WORK_PIXELS = 8192 * 8192  # what `serve` decodes (--max-image-px 8192): any camera photo (scaled down at decode)
# Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS as a decompression bomb; the front end
# refuses such header claims itself, so they never take a queue slot
BOMB_PIXELS = 2 * 89_478_485
DECODE_PIXELS = 16384 * 16384  # in-process decoding: bomb scale only, anything smaller is scaled down


@dataclass
class Limits:
    max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = WORK_PIXELS  # the worker's decode limit
    max_header_pixels: int = BOMB_PIXELS  # header claims above this are refused at admission
    max_points: int = MAX_POINTS
    max_queue: int = 64
    max_inflight_per_client: int = 32
    max_batch: int = 8
    batch_wait_s: float = 0.005

    def public(self) -> dict[str, int | float]:
        return dict(self.__dict__)

    def admission_pixels(self) -> int:
        """Claims above this are refused before queueing; smaller images are the worker's."""
        return max(self.max_header_pixels, self.max_pixels)


def decode_limits(limits: Limits | None) -> tuple[int, int]:
    """(max_pixels, max_bytes) for the decoder: the service's, or the in-process ones."""
    if limits is None:
        return DECODE_PIXELS, MAX_IMAGE_BYTES
    return limits.max_pixels, limits.max_image_bytes


def check_image(name: str, nbytes: int, size: tuple[int, int] | None, max_bytes: int,
                max_pixels: int, source: str = "") -> None:
    """TOO_LARGE (a JobError) when an image is over a byte or pixel limit. ``size`` is (width,
    height) when known; ``source`` says where it was read (an unverified header, say)."""
    if nbytes > max_bytes:
        raise JobError("TOO_LARGE", f"{name} is {nbytes >> 20} MB; the limit is {max_bytes >> 20} MB")
    if size is not None and size[0] * size[1] > max_pixels:
        raise JobError("TOO_LARGE", f"{name} is {size[0]}x{size[1]} pixels{source}; the limit is "
                       f"{max_pixels} pixels. Scale it down first.")
