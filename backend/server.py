"""``image2points serve``: wires a front end to one worker thread on one device.

The front end (``frontend.py``: ROUTER, admission, CURVE, job records; or ``broker_link.py``
behind ``image2points broker``) runs in the main thread and never runs a model; the worker
(``worker.py``: queue, micro-batching, ops) runs them in its own thread. Both get the same
``Limits`` and the op table that ``registry.py`` builds.
"""

from __future__ import annotations

import logging
import os
import signal

import zmq

from image2points.addon.core import protocol

from . import __version__, logsafe, threads
from .broker_link import BrokerLink
from .frontend import Frontend, ServerConfig, check_bind
from .registry import builtin_ops
from .worker import Worker, resolve_device

log = logging.getLogger("image2points.server")


def build(cfg: ServerConfig) -> Frontend:
    """Everything of a service but its loop: threads, device, ops, model code, sockets."""
    check_bind(cfg)
    if not threads.quiet_openmp():
        log.warning("torch was imported before OMP_WAIT_POLICY=PASSIVE could be set")
    if cfg.threads:
        threads.use_threads(cfg.threads, all_pools=True)
    device = resolve_device(cfg.device)
    ops = builtin_ops()
    from . import reconstruct_op

    reconstruct_op.configure(device, cfg.checkpoint)
    reconstruct_op.status()  # imports the model code now, not in the first hello (0.5 s stall)
    worker = Worker(zmq.Context(), ops, cfg.limits, device, cfg.preload, logsafe.Tally(log),
                    logsafe.Throttle())
    front = BrokerLink if cfg.connect_broker else Frontend
    return front(cfg, worker.ctx, worker)


def serve(cfg: ServerConfig, ready_file: str | None = None) -> int:
    server = build(cfg)
    signal.signal(signal.SIGINT, server.stop)
    signal.signal(signal.SIGTERM, server.stop)
    where = (f"as a worker of {cfg.connect_broker}" if cfg.connect_broker
             else f"on tcp://{cfg.host}:{server.port}")
    print(f"image2points {__version__} serving {where} "
          f"(device {server.device}, protocol v{protocol.PROTOCOL_VERSION})", flush=True)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.port))
        os.replace(tmp, ready_file)
    return logsafe.leave(server.serve_forever())
