"""Sample files of `score-sde sample`: the (n, *D) samples in `<name>.pt` (a plain tensor, loads
with `torch.load(weights_only=True)`) and, beside them, `<name>.json`: how they were made (the
solver and its settings, the seed, the NFE per sample, the run, the checkpoint and its step, the
label, guidance, inpainting files and tuned grid where used)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def save_samples(x: Tensor, meta: dict[str, Any], path: str | Path) -> Path:
    """Write x to `path` (.pt) and `meta` (JSON-serialisable) to the .json beside it.

    Returns:
        The .pt path.
    """
    path = Path(path)
    torch.save(x.cpu(), path)
    path.with_suffix(".json").write_text(json.dumps({"samples": path.name, **meta}, indent=1) + "\n")
    return path


def load_samples(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """The samples of a .pt file written by `score-sde sample` and their metadata.

    Raises:
        ValueError: the .pt or the .json beside it is missing.
    """
    path = Path(path)
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        raise ValueError(f"{str(path)!r} is not a sample file of `score-sde sample` with its "
                         f"{meta.name} beside it")
    return torch.load(path, map_location="cpu", weights_only=True), json.loads(meta.read_text())
