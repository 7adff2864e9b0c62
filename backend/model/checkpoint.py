"""Save/load generator weights with a model card whose sha256 is verified on load.

Files: ``<name>.pt`` (a dict of plain types: ``config``, ``frame`` and a ``state_dict`` stored in
fp16, to stay small in git) and ``<name>.card.json`` next to it, holding the ``sha256`` of the .pt
file plus the training/eval summary. Loading uses ``torch.load(..., weights_only=True)`` only and
refuses a file whose hash does not match its card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from image2points.addon.core.camera import VIEWER_FRAME as FRAME

from .generator import GeneratorConfig, StructureGenerator


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights: str | Path) -> Path:
    p = Path(weights)
    return p.with_name(p.stem + ".card.json")


def save(model: StructureGenerator, path: str | Path, card: dict, half: bool = True) -> str:
    """Write weights and their card (with the sha256). Returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).clone().cpu()
          for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"config": model.cfg.to_dict(), "state_dict": sd, "frame": FRAME}, tmp)
    tmp.replace(path)
    digest = sha256_file(path)
    card = dict(card, sha256=digest, weights=path.name, frame=FRAME, config=model.cfg.to_dict())
    card_path(path).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return digest


def load(path: str | Path, device: str = "cpu", verify: bool = True) -> tuple[StructureGenerator, dict]:
    """Model (eval mode, fp32) and its card. FileNotFoundError if absent, ValueError on a bad hash
    or a file that holds no generator."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    cp = card_path(path)
    try:
        card = json.loads(cp.read_text()) if cp.is_file() else {}
    except ValueError as exc:  # not UTF-8 or not JSON
        raise ValueError(f"model card {cp} is not JSON: {exc}") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {cp} is not a JSON object")
    if verify:
        if "sha256" not in card:
            raise ValueError(f"no model card with a sha256 next to {path} (expected {cp})")
        got = sha256_file(path)
        if got != card["sha256"]:
            raise ValueError(f"checkpoint {path}: sha256 {got} does not match its card ({card['sha256']})")
    try:  # a file its card vouches for can still be no generator (a NeRF model, a broken copy)
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises unpickling, zip and EOF errors of several kinds
        raise ValueError(f"checkpoint {path} is not a torch weights file ({type(exc).__name__})") from None
    try:
        model = StructureGenerator(GeneratorConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"checkpoint {path} is not an Image2Points generator: "
                         f"{type(exc).__name__}: {first}") from None
    # NHWC: oneDNN's CPU layout, as in training (bench/bench_model.py measures it against NCHW)
    return model.to(device, memory_format=torch.channels_last).eval(), card
