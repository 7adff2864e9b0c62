"""Median-of-N timing with a warm-up, the one way every benchmark here measures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int

    def ms(self) -> str:
        return f"{self.median * 1e3:9.2f} ms ({self.min * 1e3:.2f}-{self.max * 1e3:.2f})"

    def per(self, k: int) -> Stats:
        """The same timings divided by ``k``: for samples that each ran ``k`` iterations."""
        return Stats(self.median / k, self.min / k, self.max / k, self.n)

    def as_dict(self) -> dict[str, float]:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "n": self.n}


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
            setup: Callable[[], object] | None = None) -> Stats:
    """Run ``fn`` warmup+repeats times (``setup`` untimed before each) and summarise."""
    times = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return Stats(statistics.median(times), min(times), max(times), len(times))


def table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([f"== {title}", line(header), line(tuple("-" * w for w in widths)),
                      *map(line, rows)])


def measure_pair(a: Callable[[], object], b: Callable[[], object], repeats: int = 7,
                 warmup: int = 1) -> tuple[Stats, Stats]:
    """Like ``measure`` for two functions, alternating a, b, a, b, ...: drift in background load
    then hits both alike, which matters when their ratio is the result."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(warmup + repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    return (Stats(statistics.median(ta), min(ta), max(ta), len(ta)),
            Stats(statistics.median(tb), min(tb), max(tb), len(tb)))

