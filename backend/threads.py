"""CPU thread settings for every backend process that runs torch: one place, one set of reasons.

Why: beside Blender on few cores, busy-waiting OpenMP threads slow torch 10-25x (measured), so
``OMP_WAIT_POLICY=PASSIVE`` is the default, and it only takes effect when set before torch is
first imported. numpy's OpenBLAS keeps its own pool and ignores torch's setting: on a loaded
2-core machine a 3x3 transform of 75k points took 32 ms with it, 0.9 ms with one thread.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def quiet_openmp() -> bool:
    """Default ``OMP_WAIT_POLICY`` to PASSIVE (a user's own value wins). False when torch was
    imported already with another policy, so the setting comes too late to count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules or os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def use_threads(n: int, all_pools: bool = False) -> None:
    """torch's intra-op threads to ``n``; ``all_pools`` also limits numpy's BLAS pools to ``n``
    and torch's inter-op pool to one (the service: one job at a time next to Blender)."""
    quiet_openmp()
    import torch

    torch.set_num_threads(n)
    if not all_pools:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed by an earlier parallel op; harmless
        pass


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``n`` torch threads inside the block, the previous count after it (for measurements)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
