"""A run folder on disk, treated as data: its config.yaml read and checked, its checkpoint as the
source of truth, and one writer at a time.

- `read_run_config`: `<run>/config.yaml` as a typed train config, or a one-line ValueError naming
  the file and what is wrong (YAML, a key no setting has, a required one missing, an
  interpolation, a `_target_` outside this project: `score_sde.targets`). Nothing is built here.
- `check_against_checkpoint`: the settings that define the model (MODEL_KEYS) must be those stored
  in the checkpoint, which is what was trained; solver and evaluation settings may differ.
- `check_train_folder`: `train run=R` takes a new folder, an empty one or a run of score-sde;
  any other folder (or a file) is refused before anything is written into it.
- `run_lock`: training holds an exclusive `fcntl.flock` on `<run>/train.lock` (the kernel releases
  it when the process dies, however it dies); a second trainer fails at start naming the pid.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from score_sde.config import CHECKPOINT_DIR, CONFIG_FILE, TrainConfig

LOCK_FILE = "train.lock"
# what defines the trained model: a checkpoint's weights mean nothing under other values
MODEL_KEYS = ("sde.", "model.", "conditional", "degradation")
FRESH = (".hydra", LOCK_FILE)  # what a new run folder may hold before training writes into it


def flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": value}."""
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def _interpolations(node: Any, path: str = "") -> list[str]:
    """The keys of a plain container whose values are interpolations (`${...}`)."""
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        return [k for i, v in items for k in _interpolations(v, f"{path}.{i}" if path else str(i))]
    return [path] if isinstance(node, str) and "${" in node else []


def read_run_config(run_dir: str | Path) -> DictConfig:
    """`<run_dir>/config.yaml` merged into the train schema, checked; nothing built or run.

    Raises:
        ValueError: no such file; unreadable YAML; not a mapping; a key that is not a setting;
            a required setting missing; an interpolation (score-sde saves plain values); a
            `_target_` that score-sde does not build (`score_sde.targets.check_config`).
    """
    from score_sde.targets import check_config

    path = Path(run_dir).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"run must be a run folder of `score-sde train` holding {CONFIG_FILE}; "
                         f"{str(Path(run_dir))!r} has none")
    ckpts = sorted((path.parent / CHECKPOINT_DIR).glob("ckpt_*.pt"))
    fix = (f"repair it from the config stored in its checkpoints (torch.load('{ckpts[-1]}', "
           "weights_only=True)['config'])" if ckpts else
           "it is not a run folder of score-sde train: give run= one (or, to train, a new "
           "folder)")
    try:
        saved = OmegaConf.load(path)
    except Exception as err:  # yaml's ScannerError, ParserError, a UnicodeDecodeError, ...
        where = " ".join(str(err).split())
        raise ValueError(f"{path} is not valid YAML ({where}); {fix}") from err
    if not isinstance(saved, DictConfig):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(saved).__name__}; "
                         f"{fix}")
    found = _interpolations(OmegaConf.to_container(saved, resolve=False))
    if found:
        raise ValueError(f"{path} holds an interpolation at {found[0]}; a run's config holds "
                         f"plain values (score-sde train saves them resolved); {fix}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ValueError(f"{path} is not a config of score-sde train: "
                         f"{str(err).splitlines()[0]}{f' (at {key})' if key else ''}; "
                         f"{fix}") from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"{path} lacks {missing[0]}, which defines the run; {fix}")
    check_config(cfg, str(path))
    return cfg


def differences(a: dict[str, Any], b: dict[str, Any], compared: Callable[[str], bool]
                ) -> list[str]:
    """'key: a -> b' for the flat keys for which `compared(key)` holds and a and b differ."""
    fa, fb = flat(a), flat(b)
    for f in (fa, fb):  # null and false are the same run
        f["conditional"] = bool(f.get("conditional"))
    diff = sorted(k for k in fa.keys() | fb.keys() if compared(k) and fa.get(k) != fb.get(k))
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in diff]


def check_against_checkpoint(cfg: DictConfig, state: dict[str, Any], checkpoint: Path,
                             source: str) -> None:
    """Refuse a config that differs from the checkpoint's stored config in what defines the
    model (MODEL_KEYS: the SDE, the network, its parameterisation, conditional, the degradation).

    Raises:
        ValueError: naming the keys with the checkpoint's value and the config's.
    """
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise ValueError(f"checkpoint {str(checkpoint)!r} holds no config to check {source} "
                         "against; it was not written by score-sde train")
    diff = differences(stored, OmegaConf.to_container(cfg, resolve=True),
                       lambda k: k.startswith(MODEL_KEYS))
    if diff:
        raise ValueError(f"{source} differs from the config stored in its checkpoint "
                         f"{checkpoint.name} in what defines the model: {', '.join(diff[:6])} "
                         f"(checkpoint -> {Path(source).name}); the checkpoint is what was "
                         "trained: restore these values")


def check_train_folder(run: str | Path) -> None:
    """`train run=R`: R is a new folder, an empty one, or a run of score-sde (a config.yaml that
    `read_run_config` accepts).

    Raises:
        ValueError: R is a file, a folder holding other things than a run, or a folder whose
            config.yaml is not a config of score-sde train.
    """
    path = Path(run).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"run must be a folder (a run to resume, or a new one to train into); "
                         f"{str(run)!r} is a file")
    if (path / CONFIG_FILE).is_file():
        read_run_config(path)
        return
    if not path.is_dir():
        return
    other = sorted(p.name for p in path.iterdir() if p.name not in FRESH)
    if other:
        shown = ", ".join(other[:4]) + (", ..." if len(other) > 4 else "")
        raise ValueError(f"run={run} is a folder that is not a run of score-sde train (no "
                         f"{CONFIG_FILE}; it holds {shown}); nothing was written into it: give "
                         "a new or empty folder")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the exclusive lock of a run folder (created if needed) for the duration of a block.

    Raises:
        ValueError: another process holds it, named by its pid and host.
    """
    path = run_dir / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ValueError(f"run {str(run_dir)!r} is being trained by {holder} (it holds "
                             f"{path}); wait for it to finish or stop it, or train into "
                             "another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield path
