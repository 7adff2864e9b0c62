"""Rewrite the README's generated blocks: the model-quality table (from
backend/weights/eval_report.json) and the performance tables (from bench/results/*.json).

    python tools/update_readme.py          # after `image2points pipeline --install` or `bench`
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from image2points.backend.evaluate import markdown  # noqa: E402
from image2points.bench.report import markdown as bench_markdown  # noqa: E402


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name} -->\n).*?(\n<!-- /{name} -->)", re.S)


def render(readme: str, report: dict) -> str:
    for name, text in (("EVAL-TABLE", markdown(report)), ("BENCH-TABLE", bench_markdown())):
        block = _block(name)
        if not block.search(readme):
            raise SystemExit(f"README.md has no <!-- {name} --> block")
        readme = block.sub(lambda m, t=text: m.group(1) + t + m.group(2), readme)
    return readme


if __name__ == "__main__":
    path = ROOT / "README.md"
    report = json.loads((ROOT / "backend" / "weights" / "eval_report.json").read_text())
    path.write_text(render(path.read_text(), report))
    print(f"updated {path}")
