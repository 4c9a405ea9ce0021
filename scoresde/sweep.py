"""Run folders named by what varies, and the jobs of a sweep.

- A run: `outputs/<data>-<sde>-<model>[-cond][-<degradation>]/<time>` from the chosen groups
  (`outputs/checkerboard-vp-mlp/...`, `outputs/digits-vp-unet-sr2/...`), or
  `outputs/<experiment>/<time>` when `experiment=` is given.
- A sweep (`-m sde=vp,subvp,ve`): `outputs/sweep-<swept keys>/<time>/<key-value_...>`, one folder
  per job named by its swept values (`sde-vp`; no '=' or ',', so `run=<job folder>` needs no
  quotes); the other overrides are the same for every job.

None of this imports torch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from score_sde.config import start_time

TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def parse(overrides: list[str]) -> list[Any]:
    """hydra's parsed overrides (raises hydra's OverrideParseException on bad syntax)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of the jobs of a sweep, in hydra's order (the last key varies fastest).

    Raises:
        ValueError: a sweep that hydra's basic sweeper cannot split (an interval).
    """
    lists = []
    for o in parse(overrides):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{o.input_line}: a sweep over an interval needs a sweeper "
                                 "plugin; give the values (key=a,b,c) or range(start,stop)")
            lists.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            lists.append([o.input_line])
    return [list(job) for job in itertools.product(*lists)]


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys (and groups) that take several values in a sweep."""
    return [o.key_or_group for o in parse(overrides) if o.is_sweep_override()]


def fixed_keys(overrides: list[str]) -> list[str]:
    """The keys (and groups) that take one value in every job of a sweep."""
    return [o.key_or_group for o in parse(overrides) if not o.is_sweep_override()]


def run_name(choices: dict[str, str], overrides: list[str], conditional: bool) -> str:
    """`<data>-<sde>-<model>[-cond][-<degradation>]` from the chosen groups, or the experiment
    given by name."""
    given = {o.key_or_group: o for o in parse(overrides)}
    if "experiment" in given:
        return choices["experiment"]
    return "-".join([choices["data"], choices["sde"], choices["model"]]
                    + (["cond"] if conditional else [])
                    + ([choices["degradation"]] if choices.get("degradation") else []))


def run_dir(name: str) -> Path:
    """outputs/<name>/<start time>."""
    return Path("outputs") / name / start_time(TIME_FORMAT)


def sweep_dir(overrides: list[str]) -> Path:
    """outputs/sweep-<swept keys>/<start time>."""
    return Path("outputs") / ("sweep-" + "-".join(swept_keys(overrides))) / start_time(TIME_FORMAT)
