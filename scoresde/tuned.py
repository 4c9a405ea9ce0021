"""`score-sde sample tune.pilot=<n>`: the solver's grid tuned to the trained model on n prior draws
(`solvers.tune_grid`) before sampling. For the deterministic grid solvers only: the tuning matches
the probability-flow ODE's solution, which a stochastic solver does not follow."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from score_sde import solvers
from score_sde.sde_lib import SDE
from score_sde.solvers.result import ScoreFn

# the solvers a grid can be tuned for, and their global order from the solver's config
ORDERS: dict[str, Callable[[DictConfig], int]] = {
    "score_sde.solvers.dpm_solver_multistep": lambda s: min(s.get("order", 2) + bool(s.get("corrector")), 3),
    "score_sde.solvers.dpm_solver_singlestep": lambda s: s.get("order", 2),
    "score_sde.solvers.ddim": lambda s: 1,
    "score_sde.solvers.heun": lambda s: 2,
}


def tuned_solver(cfg: DictConfig, sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any],
                 shape: tuple[int, ...], device: torch.device) -> tuple[Callable[..., Any], Tensor]:
    """The solver on a grid tuned from cfg.tune.pilot prior draws (seeded by cfg.seed), and the grid.

    Raises:
        ValueError: the solver has no grid to tune or is stochastic (eta > 0, churn > 0), or
            tune.shift for a solver without evaluation times.
    """
    target, settings = cfg.solver._target_, cfg.solver
    if target not in ORDERS or settings.get("eta", 0) or settings.get("churn", 0):
        raise ValueError(f"tune.pilot needs a deterministic grid solver ({', '.join(ORDERS)}; "
                         f"eta = churn = 0), got {target} (e.g. solver=dpm_solver_multistep)")
    if cfg.tune.shift and target != "score_sde.solvers.dpm_solver_multistep":
        raise ValueError(f"tune.shift needs solver=dpm_solver_multistep (it takes eval_ts), got {target}")
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # not the samples' own draws
    pilot = sde.prior_sample((cfg.tune.pilot, *shape), generator=generator).to(device)
    tuned = solvers.tune_grid(sde, score_fn, pilot, settings.steps, sampler=solver,
                              order=ORDERS[target](settings), t_eps=settings.t_eps,
                              search_evals=cfg.tune.search_evals, shift=cfg.tune.shift,
                              rtol=cfg.tune.rtol, atol=cfg.tune.rtol)
    return functools.partial(solver, **tuned.kwargs), tuned.ts
