"""Resuming a run: `score-sde train run=R [overrides]` continues R from its saved config.

R/config.yaml (the resolved config `score-sde train` saved) is the base and only the overrides
given now are applied on top, so `score-sde train run=R train.steps=900` continues a conditional
digits run as it is. An override may change what does not change the model or its training
stream (RESUMABLE: the step count, evaluation, checkpoints, logging, the solver, the device); one
that changes anything else (sde, model, data, conditional, seed, the optimizer's settings, ...) is
refused with the list of such overrides. Overrides that repeat the saved values are harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from score_sde.config import CONFIG_FILE, TrainConfig
from score_sde.run_folder import differences, flat, read_run_config

# settings that may change when a run is resumed; anything else must match the saved config
RESUMABLE = ("train.steps", "train.log_every", "eval.", "checkpoint.", "logger.", "run", "name",
             "device", "threads", "progress", "solver.")
_ABSENT = object()
_SHOWN = ", ".join(r + "*" if r.endswith(".") else r for r in RESUMABLE)


def resumable(key: str) -> bool:
    """Whether the setting `key` may differ from the saved config when a run resumes."""
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def check_resumable(saved: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Raise a ValueError listing the settings in which `new` differs from the config stored in
    the checkpoint a run resumes from (`saved`), which is what was trained. A setting the
    checkpoint does not know (added to score-sde after it was written) passes at its default,
    which is what the run was trained with."""
    known, now = flat(saved), flat(new)
    defaults = flat(OmegaConf.to_container(OmegaConf.structured(TrainConfig),
                                           throw_on_missing=False))

    def added_at_default(key: str) -> bool:
        return key not in known and key in defaults and now.get(key) == defaults[key]

    diff = differences(saved, new, lambda k: not resumable(k) and not added_at_default(k))
    if diff:
        shown = ", ".join(diff[:6])
        raise ValueError(f"cannot resume {str(run_dir)!r}: the config differs from the one stored "
                         f"in its checkpoint in {shown} (checkpoint -> now); restore these values "
                         f"in {Path(run_dir) / CONFIG_FILE} (the checkpoint is what was trained) "
                         f"and resume with run= and only resumable overrides ({_SHOWN})")


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def resume_config(composed: DictConfig, overrides: list[str],
                  compose: Callable[[list[str]], DictConfig]) -> DictConfig:
    """The config to train with: `composed` itself for a new run; for `run=R` naming a run folder
    (R/config.yaml exists), R's saved config with the given overrides applied.

    Args:
        composed: the config composed from conf/train.yaml and `overrides`.
        overrides: the command line's overrides (hydra syntax; `hydra.*` ones are ignored).
        compose: composes conf/train.yaml with other overrides (to see what a preset such as
            `experiment=` sets).

    Raises:
        ValueError: listing the overrides that would change the run's model or training stream.
    """
    run = composed.get("run")
    if not run or not (Path(run).expanduser() / CONFIG_FILE).is_file():
        return composed
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = read_run_config(run)
    cfg.run = composed.run
    before = flat(_plain(cfg))
    refused = []
    parsed = [o for o in OverridesParser.create().parse_overrides(overrides)
              if not o.key_or_group.startswith(("hydra.", "hydra/")) and o.key_or_group != "run"]
    for o in parsed:
        key = o.key_or_group
        if OmegaConf.select(composed, key, default=_ABSENT) is not _ABSENT:
            # a key, or a group packaged under its name (sde=ve, solver=ddim)
            keys = [key]
        else:  # a preset packaged at the top (experiment=...): the keys it changes
            others = [x.input_line for x in parsed if x is not o]
            without, with_it = flat(_plain(compose(others))), flat(_plain(composed))
            keys = [k for k in with_it if with_it[k] != without.get(k)]
        for k in keys:
            with open_dict(cfg):
                OmegaConf.update(cfg, k, OmegaConf.select(composed, k), merge=False,
                                 force_add=True)
        after = flat(_plain(cfg))
        if any(after.get(k) != before.get(k) and not resumable(k) for k in after.keys() | before):
            refused.append(o.input_line)
        before = after
    if refused:
        raise ValueError(
            f"cannot resume {run} with {', '.join(refused)}: these change the model or its "
            f"training, which {Path(run) / CONFIG_FILE} fixes; drop them to continue the run "
            f"(only {_SHOWN} may change), or start a new run without run=")
    return cfg
