"""Logging that can never make the service wait, and whose volume hostile traffic cannot drive.

Why: a blocking ``StreamHandler`` shared by the message loop and the worker wedged the whole
service once stderr stopped draining (a parent that never reads its pipe, a stuck terminal): the
worker blocked in ``write()`` holding the handler lock, the message loop blocked on that lock,
and even SIGTERM went unanswered. Here every logger call only formats the message and
``put_nowait``s it on a bounded queue; one daemon thread writes the queue out. When the queue is
full the record is dropped and counted; the count is written before the next line that gets
through (and ``hello`` reports it). Shutdown waits for the writer only a bounded time.

``Tally`` is the other half: per-message events (refusals, BUSY, jobs failing on their input,
replies to vanished clients) are counted and logged at INFO as one summary line at most every
``SUMMARY_EVERY_S``, so N bad messages cost O(1) log bytes at INFO (each one is at DEBUG).
No zmq and no torch here: server, broker and the jobs they run share it.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO, Any

QUEUE_RECORDS = 1000  # log records waiting for the writer; beyond this they are dropped
SUMMARY_EVERY_S = 10.0
STOP_WAIT_S = 0.3  # how long shutdown waits for the writer to write out what is queued

_log = logging.getLogger("image2points.log")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``job`` comes from ``extra={"job": ...}`` when given."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key in ("job", "op", "client", "worker", "code"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Never blocks: a full queue drops the record and counts it (``Handler.handle`` holds this
    handler's lock around ``emit``, so the count needs no lock of its own)."""

    def __init__(self, q: queue.Queue) -> None:
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Writer(threading.Thread):
    """The only thread that touches the log stream. A daemon, and it writes to the raw file
    descriptor: if a write blocks forever, it blocks only this thread, holding no lock that the
    message loop, the interpreter's exit or ``logging.shutdown()`` could need."""

    def __init__(self, q: queue.Queue, handler: _DroppingQueueHandler, stream: IO[str],
                 formatter: logging.Formatter) -> None:
        super().__init__(name="image2points-log-writer", daemon=True)
        self.q, self.handler, self.stream, self.formatter = q, handler, stream, formatter
        self.reported = 0
        self.stopping = threading.Event()
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            self.fd = None

    def run(self) -> None:
        while True:
            try:
                record = self.q.get(timeout=0.1)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            lost = self.handler.dropped - self.reported
            if lost > 0:
                self.reported += lost
                self._write(logging.LogRecord(
                    _log.name, logging.WARNING, __file__, 0, "%d log records were dropped: the "
                    "log output was not keeping up (total %d)", (lost, self.reported), None))
            self._write(record)

    def _write(self, record: logging.LogRecord) -> None:
        try:
            data = (self.formatter.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self.fd is None:
                self.stream.write(data.decode("utf-8"))
                self.stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except Exception:  # a closed or broken stream, a bad format: lose the line, keep going
            pass


class _PerPlaceFilter(logging.Filter):
    """One ``warnings`` line per code location and period: Python shows a warning again for every
    new message text, and texts can carry client data (sizes, names), so a client could otherwise
    drive the log volume through a library's warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        # captureWarnings formats "path:line: Category: text"; the place is the part before text
        return self.throttle.allow(tuple(str(record.args[0] if record.args else record.msg)
                                         .split(": ", 2)[:2]))


class LogPipe:
    """What ``setup_logging`` installed: the drop count, and a bounded ``stop``."""

    def __init__(self, handler: _DroppingQueueHandler, writer: _Writer) -> None:
        self.handler, self.writer = handler, writer

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def stop(self, timeout: float = STOP_WAIT_S) -> bool:
        """Let the writer write out what is queued, for at most ``timeout`` s. False when it is
        stuck (its stream is not draining): the caller should then leave with ``os._exit``, since
        the records still queued are lost either way and nothing else may wait for them."""
        self.writer.stopping.set()
        self.writer.join(timeout)
        return not self.writer.is_alive()


_active: LogPipe | None = None


def setup_logging(level: str = "INFO", as_json: bool = False, stream: IO[str] | None = None,
                  capacity: int = QUEUE_RECORDS) -> LogPipe:
    """Route every logger (and ``warnings``) through a bounded queue to one writer thread."""
    global _active
    if _active is not None:
        _active.stop(0.1)
    formatter = JsonFormatter() if as_json else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s")
    q: queue.Queue = queue.Queue(maxsize=capacity)
    handler = _DroppingQueueHandler(q)
    writer = _Writer(q, handler, stream if stream is not None else sys.stderr, formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    logging.raiseExceptions = False  # its error reports would write to stderr directly
    logging.captureWarnings(True)  # warnings.showwarning writes to stderr directly too
    warned = logging.getLogger("py.warnings")
    warned.filters[:] = [_PerPlaceFilter()]
    writer.start()
    _active = LogPipe(handler, writer)
    return _active


def dropped() -> int:
    """Log records dropped so far because the writer was not keeping up (0 without setup)."""
    return _active.dropped if _active is not None else 0


def stop(timeout: float = STOP_WAIT_S) -> bool:
    """``LogPipe.stop`` of the installed pipe; True when there is none."""
    return _active.stop(timeout) if _active is not None else True


class Tally:
    """Counts of per-message events by category and code (thread-safe), with a summary line.

    ``add("refused", "BAD_INPUT")`` counts; ``totals()`` is what ``hello`` reports;
    ``maybe_log()`` logs the counts since the last summary, at most once every ``every_s``.
    """

    def __init__(self, logger: logging.Logger, every_s: float = SUMMARY_EVERY_S,
                 clock: Any = time.monotonic) -> None:
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self._lock = threading.Lock()
        self._total: collections.Counter[tuple[str, str]] = collections.Counter()
        self._recent: collections.Counter[tuple[str, str]] = collections.Counter()
        self._last = clock()

    def add(self, category: str, code: str, n: int = 1) -> None:
        with self._lock:
            self._total[(category, code)] += n
            self._recent[(category, code)] += n

    def totals(self) -> dict[str, dict[str, int]]:
        with self._lock:
            items = list(self._total.items())
        out: dict[str, dict[str, int]] = {}
        for (category, code), n in sorted(items):
            out.setdefault(category, {})[code] = n
        return out

    def summary(self, force: bool = False) -> str | None:
        """The summary line due now (and reset), else None."""
        now = self.clock()
        with self._lock:
            if not self._recent or (not force and now - self._last < self.every_s):
                return None
            recent, self._recent = self._recent, collections.Counter()
            span, self._last = now - self._last, now
        by_cat: dict[str, list[str]] = {}
        for (category, code), n in sorted(recent.items()):
            by_cat.setdefault(category, []).append(f"{code} {n}")
        parts = "; ".join(f"{category}: {', '.join(codes)}" for category, codes in by_cat.items())
        return f"in the last {span:.0f} s: {parts}"

    def maybe_log(self, force: bool = False) -> None:
        line = self.summary(force)
        if line is not None:
            self.logger.info("%s", line)


class Throttle:
    """At most one ``allow(key)`` per ``every_s`` for each key: for lines a client could trigger
    over and over (a traceback of an op failing on some input), the first is worth reading."""

    def __init__(self, every_s: float = SUMMARY_EVERY_S, clock: Any = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self._last: dict[Any, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: Any) -> bool:
        now = self.clock()
        with self._lock:
            if now - self._last.get(key, -1e18) < self.every_s:
                return False
            self._last[key] = now
            return True


def log_bug(logger: logging.Logger, tally: Tally, throttle: Throttle, where: str,
            exc: BaseException) -> None:
    """Call in an ``except``: a bug must not take a service down, and a client that can trigger it
    over and over must not fill the log with its traceback (counted, logged once per interval)."""
    tally.add("bugs", exc.__class__.__name__)
    if throttle.allow((where, exc.__class__.__name__)):
        logger.error("unexpected error %s (logged once per %.0f s, all counted):\n%s", where,
                     throttle.every_s, traceback.format_exc())


def leave(code: int) -> int:
    """End the process with ``code``, now: give the log writer a bounded moment, then
    ``os._exit``. Why not a normal return: the interpreter's teardown with torch loaded took
    1.5 s here (SIGTERM must end the service within 3 s), and it would wait on a job that ignored
    its cancel or on a log writer stuck on a stream nobody reads. Sockets are closed by now."""
    stop()
    # whatever else sits in stdio buffers, in a thread: that stream may be a full, unread pipe
    flusher = threading.Thread(target=_flush_stdio, daemon=True)
    flusher.start()
    flusher.join(0.1)
    os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
