"""Run folders named by what varies, the jobs of a sweep, and the table that ends a sweep.

- A run: `outputs/<data>-<sde>-<model>[-cond]/<time>` from the chosen groups
  (`outputs/checkerboard-vp-mlp/...`), or `outputs/<experiment>/<time>` when `experiment=` is given.
- A sweep (`-m sde=vp,subvp,ve`): `outputs/sweep-<swept keys>/<time>/<key-value_...>`, one folder
  per job named by its swept values (`sde-vp`; no '=' or ',', so `run=<job folder>` needs no
  quotes); the other overrides are the same for every job.
- The table: each job's final metrics (loss, test NLL, entropy, bits/dim, NFE, time), read back
  from the jobs' metrics.jsonl, printed when the sweep ends.

None of this imports torch.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from score_sde.config import start_time
from score_sde.metrics import read_metrics

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
    """`<data>-<sde>-<model>[-cond]` from the chosen groups, or the experiment given by name."""
    given = {o.key_or_group: o for o in parse(overrides)}
    if "experiment" in given:
        return choices["experiment"]
    return "-".join([choices["data"], choices["sde"], choices["model"]]
                    + (["cond"] if conditional else []))


def run_dir(name: str) -> Path:
    """outputs/<name>/<start time>."""
    return Path("outputs") / name / start_time(TIME_FORMAT)


def sweep_dir(overrides: list[str]) -> Path:
    """outputs/sweep-<swept keys>/<start time>."""
    return Path("outputs") / ("sweep-" + "-".join(swept_keys(overrides))) / start_time(TIME_FORMAT)


def _job_folders(root: Path) -> list[Path]:
    """The job folders of a sweep folder, in the order hydra ran them."""
    found = []
    for cfg in root.glob("*/.hydra/hydra.yaml"):
        found.append((int(OmegaConf.load(cfg).hydra.job.num), cfg.parent.parent))
    return [folder for _, folder in sorted(found)]


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def table(root: Path) -> list[str]:
    """The rows of the table of a sweep folder's jobs: one per job, with its final metrics."""
    rows = []
    for folder in _job_folders(root):
        train = read_metrics(folder, "train")
        final = (read_metrics(folder, "eval") or [{}])[-1]
        done = read_metrics(folder, "summary")
        if not done:
            rows.append([folder.name, "did not finish: see its train.log"])
            continue
        nll = (f"{final['test_nll']:.4f} +- {final['test_nll_stderr']:.4f}"
               if "test_nll" in final else "-")
        gap = final["test_nll"] - final["entropy"] if "test_nll" in final and "entropy" in final \
            else None
        rows.append([folder.name, str(done[-1]["step"]), _fmt(train[-1]["loss"] if train else None),
                     nll, _fmt(final.get("entropy")), _fmt(gap, "+.4f"),
                     _fmt(final.get("test_bpd")), _fmt(final.get("sample_nfe"), ".0f"),
                     _fmt(final.get("nll_nfe"), ".0f"), _fmt(done[-1]["train_seconds"], ".0f")])
    head = ["job", "steps", "loss", "test NLL (nats)", "entropy", "NLL-entropy", "bits/dim",
            "sample NFE", "NLL NFE", "train s"]
    full = [r for r in rows if len(r) == len(head)]
    widths = [max(len(r[i]) for r in [head, *full]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *full]]
    return lines + [f"{r[0]}  {r[1]}" for r in rows if len(r) != len(head)]
