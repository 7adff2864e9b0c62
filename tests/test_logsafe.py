"""backend/logsafe.py: a logger call never waits on the log stream; counts instead of lines."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time

import pytest

from image2points.backend import logsafe


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logsafe.stop(0.5)
    logsafe._active = None
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    logging.raiseExceptions = True


def test_a_stream_nobody_reads_never_blocks_the_caller(restore_logging):
    """The wedge of issue 20: a pipe nobody reads. 20,000 lines from two threads return at once;
    what did not fit is dropped and counted, and stop() reports the writer stuck, bounded."""
    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    pipe = logsafe.setup_logging("INFO", stream=stream, capacity=100)
    log = logging.getLogger("image2points.test")

    def spam() -> None:
        for i in range(10_000):
            log.info("line %d %s", i, "x" * 100)

    threads = [threading.Thread(target=spam) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a logger call blocked"
    assert pipe.dropped > 10_000  # the pipe holds ~64 KiB: most of 2.2 MB was dropped
    assert logsafe.dropped() == pipe.dropped
    t0 = time.monotonic()
    assert pipe.stop(0.2) is False  # the writer is stuck in write(): say so, don't wait
    assert time.monotonic() - t0 < 5
    os.close(r)  # now its write fails (EPIPE) and the thread moves on and ends
    pipe.writer.join(10)
    assert not pipe.writer.is_alive()
    stream.close()


def test_dropped_records_are_reported_in_the_next_line_that_gets_through(restore_logging):
    out = io.StringIO()
    pipe = logsafe.setup_logging("INFO", stream=out, capacity=5)
    # hold the writer so the queue fills: it takes the handler's drop count only when it writes
    pipe.writer.stopping.set()
    pipe.writer.join(5)
    log = logging.getLogger("image2points.test")
    for i in range(12):
        log.info("early %d", i)
    assert pipe.dropped == 7
    pipe.writer = logsafe._Writer(pipe.handler.queue, pipe.handler, out, logging.Formatter("%(message)s"))
    pipe.writer.start()
    assert pipe.stop(5)
    lines = out.getvalue().splitlines()
    assert lines[0] == "7 log records were dropped: the log output was not keeping up (total 7)"
    assert lines[1:] == [f"early {i}" for i in range(5)]


def test_json_lines_and_warnings_go_through_the_queue(restore_logging):
    import warnings

    out = io.StringIO()
    logsafe.setup_logging("DEBUG", as_json=True, stream=out)
    logging.getLogger("image2points.server").debug("job=%s queued", "j1", extra={"job": "j1"})
    warnings.warn("careful", UserWarning, stacklevel=1)
    assert logsafe.stop(5)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0]["msg"] == "job=j1 queued" and rows[0]["job"] == "j1" and rows[0]["level"] == "DEBUG"
    assert any("careful" in r["msg"] for r in rows[1:])


def test_warnings_with_varying_text_are_one_line_per_place(restore_logging):
    """Python repeats a warning for each new text; texts can carry client data."""
    import warnings

    out = io.StringIO()
    logsafe.setup_logging("INFO", stream=out)
    for i in range(50):
        warnings.warn(f"image {i} looks odd", UserWarning, stacklevel=1)
    warnings.warn("something else", DeprecationWarning, stacklevel=1)
    assert logsafe.stop(5)
    text = out.getvalue()
    assert text.count("UserWarning: image") == 1 and "DeprecationWarning: something else" in text


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_tally_summarises_at_most_every_period_with_counts_by_code():
    clock = FakeClock()
    lines: list[str] = []

    class Log:
        def info(self, fmt: str, line: str) -> None:
            lines.append(line)

    tally = logsafe.Tally(Log(), every_s=10.0, clock=clock)  # type: ignore[arg-type]
    for _ in range(5000):
        tally.add("refused", "BAD_INPUT")
    tally.add("refused", "TOO_LARGE", 3)
    tally.add("done", "echo")
    tally.maybe_log()
    assert lines == []  # not 10 s yet
    clock.t += 10
    tally.maybe_log()
    tally.maybe_log()
    assert lines == ["in the last 10 s: done: echo 1; refused: BAD_INPUT 5000, TOO_LARGE 3"]
    clock.t += 30
    tally.maybe_log()  # nothing new: nothing to say
    tally.add("refused", "BUSY")
    tally.maybe_log(force=True)
    assert lines[-1] == "in the last 30 s: refused: BUSY 1"
    assert tally.totals() == {"done": {"echo": 1},
                              "refused": {"BAD_INPUT": 5000, "BUSY": 1, "TOO_LARGE": 3}}


def test_throttle_allows_one_per_key_and_period():
    clock = FakeClock()
    th = logsafe.Throttle(10.0, clock=clock)
    assert th.allow("a") and not th.allow("a") and th.allow("b")
    clock.t += 9.9
    assert not th.allow("a")
    clock.t += 0.2
    assert th.allow("a")
