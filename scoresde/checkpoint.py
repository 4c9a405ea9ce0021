"""Checkpoints: atomic writes, the last K kept, safe loading.

A checkpoint is a dict of tensors and plain Python values (model, EMA and optimizer state dicts,
the step, RNG states, the resolved config as a dict), so it loads with
`torch.load(weights_only=True)`: loading never unpickles code. It is written to a temporary file in
the same folder, flushed to disk and renamed over the final name, so a crash mid-write leaves the
previous checkpoints intact; older checkpoints are deleted only after the new one is in place. A
write that fails (a full disk) removes its temporary file and says so in one line with the free
space; one killed mid-write leaves its temporary file, which `remove_temporary_files` deletes when
the run next starts (under the run's lock, so never another writer's).

Files are named `ckpt_<step:08d>.pt` in `<run>/checkpoints/`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from score_sde.faults import free_space

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt or not a checkpoint), or written."""


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoints in `folder`, oldest step first (none if the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def save_checkpoint(state: dict[str, Any], folder: str | Path, step: int, keep: int = 3) -> Path:
    """Write `state` atomically as the checkpoint of `step`, then keep only the last `keep`.

    Returns:
        The path written.

    Raises:
        CheckpointError: the write failed (a full disk, ...): the path, the reason and the free
            space in one line; the previous checkpoints are left as they were.
    """
    if not (isinstance(keep, int) and keep >= 1):
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(_unwritable(path, err)) from err
        raise
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt or not a checkpoint; the message
            names the file and the previous checkpoint next to it, if there is one.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(_unreadable(path, f"{type(err).__name__}: {err}")) from err
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(_unreadable(path, "it holds no 'step' and 'model'"))
    return state


def _unwritable(path: Path, err: OSError) -> str:
    older = list_checkpoints(path.parent)
    kept = f"; the previous checkpoint {str(older[-1])!r} is intact" if older else ""
    return (f"cannot write checkpoint {str(path)!r}: {err.strerror or err} "
            f"({free_space(path.parent)}){kept}; free some space and resume the run")


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that were killed; returns them."""
    folder = Path(folder)
    found = sorted(folder.glob(".ckpt_*.tmp")) if folder.is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def _unreadable(path: Path, why: str) -> str:
    older = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    hint = (f"; the previous checkpoint {str(older[-1])!r} is intact: delete the bad file to "
            f"resume from it" if older else "")
    return f"cannot read checkpoint {str(path)!r} (truncated or corrupt: {why}){hint}"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the highest step in `folder`, or None."""
    found = list_checkpoints(folder)
    return found[-1] if found else None
