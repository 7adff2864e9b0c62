"""The README's performance tables, generated from ``bench/results/*.json`` so they cannot drift.

    image2points bench && python tools/update_readme.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str, results: Path) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _machine(doc: dict | None) -> str:
    """CPU cores and GPU of the machine a result was measured on, as the result itself says."""
    m = (doc or {}).get("machine", {})
    gpu = m.get("gpu")
    return f"{m.get('cpu_count', '?')} CPU cores, {f'GPU {gpu}' if gpu else 'no GPU'}"


def markdown(results: Path = RESULTS) -> str:
    docs = {n: _load(n, results) for n in ("import", "wire", "roundtrip", "model", "serve", "nerf")}
    total = sum(d["seconds"] for d in docs.values() if d)
    out = [f"Latest full run: `image2points bench` ({total / 60:.1f} min in all), "
           f"{_machine(docs['model'])}.", ""]
    rows = ["| benchmark | measured | same-run baseline | ratio (goal) |", "|---|---|---|---|"]
    if d := docs["import"]:
        r = d["result"]["1000000"]
        rows.append(
            f"| import 1M coloured points into Blender | {_ms(r['importer']['median_s'])} (positions + "
            f"colours + Geometry Nodes + material) | `mesh.from_pydata(xyz.tolist())`, positions only: "
            f"{_ms(r['from_pydata_from_numpy_no_colour']['median_s'])} (of which `from_pydata` on a ready "
            f"list {_ms(r['from_pydata_ready_list_no_colour']['median_s'])}) | {r['speedup']:.1f}x (goal >= 30x: "
            f"{_met(r['speedup'] >= 30)}); "
            f"{r['speedup_vs_ready_list']:.1f}x against the ready list |")
    if d := docs["wire"]:
        r = d["result"]
        cells = " / ".join(f"{k}: {v['overhead_ratio']:.2f}x" for k, v in r.items())
        rows.append("| wire, point payloads | " + " / ".join(
            f"{_ms(v['protocol']['median_s'])}" for v in r.values()) +
            " | bare pyzmq multipart of the same bytes: " + " / ".join(
            f"{_ms(v['bare']['median_s'])}" for v in r.values()) + f" | {cells} (goal <= 1.2x: "
            f"{_met(all(v['overhead_ratio'] <= 1.2 for v in r.values()))}) |")
    if d := docs["roundtrip"]:
        r = d["result"]
        st = r["stages_median_s"]
        parts = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in st.items() if k != "total")
        rows.append(f"| roundtrip image -> points in Blender | {_ms(st['total'])} median ({parts} ms) | "
                    f"model forward alone, in-process: {_ms(r['forward']['median_s'])} | "
                    f"{r['ratio']:.2f}x (goal < 2x, and < 60 ms: {_met(r['ratio'] < 2 and st['total'] < 0.06)}) |")
    if d := docs["model"]:
        r = d["result"]
        rows.append(f"| model ({r['params_M']} M params, {r['threads']} threads) | forward "
                    f"{r['forward_b1_ms']:.1f} ms at batch 1, {r['forward_b16_ms']:.1f} ms at batch 16; "
                    f"fuse3d {r['fuse3d_b16_ms']:.1f} ms; train step {r['train_step_b24_ms']:.0f} ms at "
                    f"batch 24 ({r['train_samples_per_s']:.0f} samples/s) | NCHW weights: "
                    f"{r['forward_b1_nchw_ms']:.1f} / {r['forward_b16_nchw_ms']:.1f} ms | NHWC "
                    f"{r['forward_b1_nchw_ms'] / r['forward_b1_ms']:.2f}x faster at batch 1 |")
    if d := docs["serve"]:
        r = d["result"]
        m = r["median_jobs_per_s"]
        rows.append(f"| serve, {r['clients']} concurrent clients, {r['threads']} torch thread | "
                    f"{m['8']:.1f} jobs/s with micro-batching (mean batch {r['mean_batch']['8']:.1f}) | "
                    f"one at a time (max_batch 1): {m['1']:.1f} jobs/s | "
                    f"{r['ratio_batched_vs_single']:.2f}x (goal >= 2x: {_met(r['ratio_batched_vs_single'] >= 2)}; "
                    f"{'no GPU' if not d['machine'].get('gpu') else 'GPU ' + str(d['machine']['gpu'])}; the model alone "
                    f"gains {r['forward_batching_ceiling']:.2f}x from batch 8, the ceiling) |")
    out += rows
    if d := docs["nerf"]:
        r = d["result"]
        cps = [30.0, 60.0, 120.0, 300.0]

        def at(curve: list[dict[str, float]], s: float) -> str:
            return next((f"{c['psnr']:.2f}" for c in curve if c["seconds"] == s), "-")

        out += ["", f"NeRF (seed 003), held-out PSNR in dB on `{r['scene']}`, 1 torch thread:", "",
                "| held-out PSNR (dB) | " + " | ".join(f"{int(c)} s" for c in cps) + " |",
                "|---|" + "---|" * len(cps)]
        for label, cur in (("fast grid field", r["fast"]["curve"]),
                           ("seed MLP NeRF (with the research fixes)", r["mlp"]["curve"]),
                           ("fast grid field, `gallery` scene never tuned on",
                            r["unseen_gallery_fast"]["curve"])):
            out.append(f"| {label} | " + " | ".join(at(cur, c) for c in cps) + " |")
        reach = r.get("fast_seconds_to_mlp_final")
        out += ["", f"The fast field reaches the MLP's 5-minute PSNR ({r['mlp_final_psnr']:.2f} dB) after "
                    f"{reach:.1f} s ({300 / reach:.0f}x sooner; goal >= 3x) and is at "
                    f"{r['fast_best_psnr_within_5min']:.2f} dB within 5 minutes (goal >= 28). Trivial "
                    f"baselines: all-white {r['baselines']['all_white']:.1f} dB, mean training image "
                    f"{r['baselines']['mean_train_image']:.1f} dB."
                if reach else "The fast field never reached the MLP's 5-minute PSNR."]
    return "\n".join(out)
