"""`score-sde sample tune.pilot=<n>`: the solver's grid tuned to the trained model on n prior draws
(`solvers.tune_grid`) before sampling, its pilot error against the solver's own grid, and the grid
saved to a JSON file that `tune.load=<file>` reuses. For the deterministic grid solvers only: the
tuning matches the probability-flow ODE's solution, which a stochastic solver does not follow."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from score_sde import solvers
from score_sde.console import bar
from score_sde.sde_lib import SDE, ScoreFn

# the solvers a grid can be tuned for, and their global order from the solver's config
ORDERS: dict[str, Callable[[DictConfig], int]] = {
    "score_sde.solvers.dpm_solver_multistep":
        lambda s: min(s.get("order", 2) + (s.get("corrector") == "unipc"), 3),
    "score_sde.solvers.dpm_solver_singlestep": lambda s: s.get("order", 2),
    "score_sde.solvers.ddim": lambda s: 1,
    "score_sde.solvers.heun": lambda s: 2,
}
EVAL_TS_SOLVER = "score_sde.solvers.dpm_solver_multistep"  # the one solver that takes eval_ts


def _check_solver(cfg: DictConfig, setting: str) -> None:
    target, settings = cfg.solver._target_, cfg.solver
    if target not in ORDERS or settings.get("eta", 0) or settings.get("churn", 0):
        raise ValueError(f"{setting} needs a deterministic grid solver ({', '.join(ORDERS)}; "
                         f"eta = churn = 0), got {target} (e.g. solver=dpm_solver_multistep)")


def _rms_error(x: Tensor, ref: Tensor) -> float:
    """RMS over the batch of ||x - ref|| / sqrt(D): tune_grid's pilot error."""
    return (x - ref).flatten(1).norm(dim=1).pow(2).mean().div(x[0].numel()).sqrt().item()


def tune(cfg: DictConfig, sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any],
         shape: tuple[int, ...], device: torch.device, *, progress: bool = False
         ) -> dict[str, Any]:
    """A grid for cfg.solver tuned on cfg.tune.pilot prior draws (seeded by cfg.seed + 1, not the
    samples' own draws), with its pilot error and the error of the solver's own grid on the same
    draws (both against the PF-ODE solved at tune.rtol).

    Returns:
        The grid record that `save_grid` writes: ts, eval_ts, pilot_error, own_grid_error, gain,
        and the settings it was tuned with.

    Raises:
        ValueError: the solver has no grid to tune or is stochastic (eta > 0, churn > 0), or
            tune.shift for a solver without evaluation times.
    """
    _check_solver(cfg, "tune.pilot")
    target, settings, t = cfg.solver._target_, cfg.solver, cfg.tune
    if t.shift and target != EVAL_TS_SOLVER:
        raise ValueError(f"tune.shift needs solver=dpm_solver_multistep (it takes eval_ts), got {target}")
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    pilot = sde.prior_sample((t.pilot, *shape), generator=generator).to(device)
    runs = 5 + (t.search_evals + 2 if t.search_evals else 0)  # about how many solves it takes
    with bar(runs, "tuning", "solve", show=progress) as shown:
        calls = [0]

        def counted(*args: Any, **kwargs: Any) -> Any:
            shown.update(1)
            return solver(*args, **kwargs)

        def score(x: Tensor, t: Tensor) -> Tensor:  # the reference solves move the NFE shown
            calls[0] += 1
            if progress and calls[0] % 20 == 0:
                shown.set_postfix_str(f"{calls[0]} NFE")
            return score_fn(x, t)

        tuned = solvers.tune_grid(sde, score, pilot, settings.steps, sampler=counted,
                                  order=ORDERS[target](settings), t_eps=settings.t_eps,
                                  search_evals=t.search_evals, shift=t.shift, rtol=t.rtol,
                                  atol=t.rtol)
        ref = solvers.probability_flow(sde, score, pilot, rtol=t.rtol, atol=t.rtol,
                                       t_eps=settings.t_eps).x
        own = _rms_error(counted(sde, score, pilot).x, ref)
    return {"solver": target, "steps": settings.steps, "t_eps": settings.t_eps,
            "ts": tuned.ts.tolist(),
            "eval_ts": None if tuned.eval_ts is None else tuned.eval_ts.tolist(),
            "pilot_error": tuned.pilot_error, "own_grid_error": own,
            "gain": own / tuned.pilot_error if tuned.pilot_error > 0 else math.inf,
            "pilot": t.pilot, "search_evals": t.search_evals, "shift": t.shift, "rtol": t.rtol,
            "seed": cfg.seed}


def save_grid(grid: dict[str, Any], path: Path) -> Path:
    """Write a grid record (with what it was tuned for: the run, checkpoint, step and SDE)."""
    path.write_text(json.dumps(grid, indent=1) + "\n")
    return path


def load_grid(path: str, cfg: DictConfig, run_sde: DictConfig) -> dict[str, Any]:
    """The grid record in `path` (written by `save_grid`), checked against cfg.solver and the run.

    Raises:
        ValueError: naming tune.load: the file is unreadable, the grid's step count is not
            solver.steps, it has evaluation times for a solver that takes none, or it was tuned
            for another SDE than the run's.
    """
    _check_solver(cfg, "tune.load")
    try:
        grid = json.loads(Path(path).expanduser().read_text())
        ts = grid["ts"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"tune.load must be a grid file written by `score-sde sample "
                         f"tune.pilot=...` (<name>.grid.json), got {path!r} ({err})") from err
    steps = cfg.solver.steps
    if len(ts) != steps + 1:
        raise ValueError(f"tune.load: the grid in {path} has {len(ts) - 1} steps but "
                         f"solver.steps is {steps}; set solver.steps={len(ts) - 1}")
    if grid.get("eval_ts") is not None and cfg.solver._target_ != EVAL_TS_SOLVER:
        raise ValueError(f"tune.load: the grid in {path} moves the evaluation times (tune.shift), "
                         f"which only solver=dpm_solver_multistep takes, got {cfg.solver._target_}")
    sde = OmegaConf.to_container(run_sde, resolve=True)
    if grid.get("sde") != sde:
        raise ValueError(f"tune.load: the grid in {path} was tuned for sde {grid.get('sde')}, "
                         f"but this run's sde is {sde}; tune a grid for this run with tune.pilot")
    return grid


def on_grid(solver: Callable[..., Any], grid: dict[str, Any]) -> Callable[..., Any]:
    """The solver called on the grid's times (and evaluation times)."""
    kw = {"ts": torch.tensor(grid["ts"], dtype=torch.float64)}
    if grid.get("eval_ts") is not None:
        kw["eval_ts"] = torch.tensor(grid["eval_ts"], dtype=torch.float64)
    return functools.partial(solver, **kw)
