"""Serving throughput: 8 concurrent clients, micro-batching (max_batch 8) vs one-at-a-time (1).

Both servers are the same code started in the same run with the same thread count; rounds
alternate between them so background load hits both alike. Reported: jobs/s per round, the median
of >= 5 rounds after a warm-up round each, and the ratio batched / one-at-a-time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .backend_proc import start_backend
from .timing import table

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


def _start(max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    return start_backend(threads, "--max-batch", str(max_batch), "--batch-wait-ms", "5")


def _round(endpoint: str, image: bytes, jobs_per_client: int) -> tuple[float, float]:
    """CLIENTS threads, each with one job in flight at a time. Returns (jobs/s, mean batch)."""
    from image2points.addon.core.client import Client

    batches: list[int] = []
    errors: list[str] = []

    def client() -> None:
        with Client(endpoint) as c:
            for _ in range(jobs_per_client):
                try:
                    res = c.wait(c.submit("reconstruct", {"max_points": 20_000}, {"image": image},
                                          {"image": "image/png"}), timeout=600)
                    batches.append(int(res.meta.get("batch", 1)))
                except Exception as exc:  # reported below; a failed round is not a timing
                    errors.append(str(exc))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} jobs failed, e.g. {errors[0]}")
    return CLIENTS * jobs_per_client / dt, statistics.mean(batches)


def run(quick: bool = False) -> dict:
    from image2points.addon.core.client import Client

    chair = ROOT / "examples" / "chair.png"
    image = chair.read_bytes() if chair.exists() else _disc_png()
    threads = max(1, (os.cpu_count() or 2) // 2)
    per_client, rounds = (2, 5) if quick else (4, 7)
    procs = {}
    try:
        for mb in (8, 1):
            procs[mb] = _start(mb, threads)
        with Client(procs[8][1]) as c:  # the model preloads in the background: wait for it
            deadline = time.monotonic() + 300
            while (model := c.hello(timeout=60).get("model", {})).get("state") == "not loaded" \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        if model.get("state") != "ready":
            msg = ("no model checkpoint yet (hello says model state "
                   f"{model.get('state')!r}: {model.get('error', '')}); train or install one first")
            print(f"bench serve skipped: {msg}")
            return {"skipped": msg}
        for mb in (8, 1):  # warm-up: first forward passes, allocator, caches
            _round(procs[mb][1], image, 1)
        rates: dict[int, list[float]] = {8: [], 1: []}
        mean_batch: dict[int, list[float]] = {8: [], 1: []}
        ratios = []
        for _ in range(rounds):
            for mb in (8, 1):
                r, b = _round(procs[mb][1], image, per_client)
                rates[mb].append(r)
                mean_batch[mb].append(b)
            ratios.append(rates[8][-1] / rates[1][-1])
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(30)
    ceiling = _forward_ceiling(threads)
    med = {mb: statistics.median(v) for mb, v in rates.items()}
    ratio = statistics.median(ratios)
    rows = [(f"max_batch {mb}", f"{med[mb]:.2f}", f"{min(rates[mb]):.2f}-{max(rates[mb]):.2f}",
             f"{statistics.mean(mean_batch[mb]):.1f}") for mb in (8, 1)]
    print(table(f"serve: {CLIENTS} clients x {per_client} reconstruct jobs per round, "
                f"{rounds} rounds, {threads} torch threads",
                rows, ("server", "jobs/s (median)", "range", "mean batch")))
    print(f"micro-batching speed-up: {ratio:.2f}x (median of {rounds} paired rounds)")
    print(f"ceiling from the model alone: one batch-8 forward does the work of {ceiling:.2f} batch-1 "
          f"forwards on {threads} thread(s) here; batching cannot speed serving up by more than that")
    return {"clients": CLIENTS, "jobs_per_client": per_client, "rounds": rounds, "threads": threads,
            "jobs_per_s": {str(k): v for k, v in rates.items()},
            "median_jobs_per_s": {str(k): v for k, v in med.items()},
            "mean_batch": {str(k): statistics.mean(v) for k, v in mean_batch.items()},
            "ratio_batched_vs_single": ratio, "ratios": ratios,
            "forward_batching_ceiling": ceiling}


def _forward_ceiling(threads: int) -> float:
    """(8 x batch-1 forward time) / (batch-8 forward time), same checkpoint and thread count as
    the servers: on a CPU the convolutions are compute-bound already at batch 1, so this bounds
    what micro-batching can gain."""
    import torch

    from image2points.backend.model import checkpoint
    from image2points.backend.model.reconstruct import default_checkpoint_path
    from image2points.backend.threads import torch_threads

    from .timing import measure

    with torch_threads(threads):
        model, _ = checkpoint.load(default_checkpoint_path())
        x1, x8 = torch.rand(1, 4, 64, 64), torch.rand(8, 4, 64, 64)
        with torch.inference_mode():
            s1 = measure(lambda: model(x1), 10, warmup=3)
            s8 = measure(lambda: model(x8), 10, warmup=3)
    return 8 * s1.median / s8.median


def _disc_png() -> bytes:
    sys.path.insert(0, str(ROOT / "tests"))
    from images import disc_rgba, png_bytes

    return png_bytes(disc_rgba(128))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
